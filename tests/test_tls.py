"""TLS on the listener (``"tls": true``), with a CA and certificates made at
test time: wss echo verified against that CA, certificate chains, minimum TLS
versions, renegotiation, a key that does not match, ``lapps devcert``, and the
IPv6 loopback listener."""

import asyncio
import datetime
import json
import os
import shutil
import socket
import ssl
import stat
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID
from OpenSSL import SSL

from conftest import APPS, REPO, TWISTD, Server, reactive, write_config
from lapps import devcert
from support.peers import has_ipv6_loopback
from support.pki import PKI, trusting, write_pem

MiB = 1024 * 1024
ECHO = {"echo": reactive("/echo", instances=2)}
LAPPS = Path(sys.executable).parent / "lapps"


def binary(size):
    return bytes((i * 7 + 3) % 256 for i in range(256)) * (size // 256) + bytes(size % 256)


def text(size):
    """A str whose UTF-8 encoding is exactly ``size`` bytes, with 1- to 4-byte characters."""
    return "aé€😀" * (size // 10) + "x" * (size % 10)


# --- certificates ---------------------------------------------------------

@pytest.fixture
def pki(tmp_path):
    return PKI(tmp_path)


def make_ca_cert(common_name, issuer=None, path_length=None):
    """A CA certificate, self-signed or signed by ``issuer`` (a (cert, key)
    pair), with key identifiers so that strict verifiers accept it too."""
    key = ec.generate_private_key(ec.SECP256R1())
    signer_cert, signer_key = issuer or (None, key)
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "lapps tests"),
                         x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(signer_cert.subject if signer_cert else subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                signer_key.public_key()), critical=False)
            .sign(signer_key, hashes.SHA256()))
    return cert, key


@pytest.fixture
def chain(tmp_path):
    """root → intermediate → localhost leaf. ``root.pem`` holds the root
    alone; ``chain.pem`` the leaf then the intermediate; ``leaf.pem`` the leaf."""
    root = make_ca_cert("lapps test root", path_length=1)
    intermediate = make_ca_cert("lapps test intermediate", issuer=root, path_length=0)
    leaf, leaf_key = devcert.make_server_cert(*intermediate)
    d = tmp_path / "chain"
    files = {
        "root": write_pem(d / "root.pem", devcert.pem_cert(root[0])),
        "chain": write_pem(d / "chain.pem", devcert.pem_cert(leaf), devcert.pem_cert(intermediate[0])),
        "leaf": write_pem(d / "leaf.pem", devcert.pem_cert(leaf)),
        "key": write_pem(d / "key.pem", devcert.pem_key(leaf_key)),
    }
    assert leaf.issuer == intermediate[0].subject != root[0].subject
    return files


# --- clients ---------------------------------------------------------------

async def _echo(url, messages, ctx):
    async with websockets.connect(url, ssl=ctx, max_size=None, open_timeout=20) as ws:
        replies = []
        for message in messages:
            await ws.send(message)
            replies.append(await asyncio.wait_for(ws.recv(), 30))
        tls = ws.transport.get_extra_info("ssl_object")
        return replies, tls.version() if tls else None, tls.getpeercert() if tls else None


def echo(url, messages, ctx=None):
    """Send each message over one connection and collect the replies; returns
    (replies, negotiated TLS version or None, the verified peer certificate)."""
    return asyncio.run(_echo(url, messages, ctx))


def wss(server, path="/echo", host="localhost"):
    return f"wss://{host}:{server.port}{path}"


def assert_echoes(url, ctx, messages=(b"ping", "pong")):
    replies, version, peer = echo(url, list(messages), ctx)
    assert replies == list(messages)
    assert [type(r) for r in replies] == [type(m) for m in messages]
    return version, peer


# --- wss echo ----------------------------------------------------------------

SIZES = [0, 125, 126, 64 * 1024, MiB, 16 * MiB]


@pytest.mark.parametrize("message", [make(n) for make in (binary, text) for n in SIZES],
                         ids=[f"{kind}-{n}" for kind in ("binary", "text") for n in SIZES])
def test_wss_echo_verified_against_the_generated_ca(start_server, pki, tmp_path, message):
    """Certificate paths relative to the config's folder (twistd runs in the
    repo, so they only resolve if lapps resolves them against the config)."""
    server = start_server(ECHO, pki.server(relative_to=tmp_path))
    assert server.count(r"listening on wss://") == 1
    version, peer = assert_echoes(wss(server), trusting(pki.ca), [message])
    assert version == "TLSv1.3"
    assert ("DNS", "localhost") in peer["subjectAltName"]


def test_wss_by_ip_address_uses_the_ip_san(start_server, pki):
    server = start_server(ECHO, pki.server())
    assert_echoes(wss(server, host="127.0.0.1"), trusting(pki.ca))


def test_plain_ws_client_gets_no_websocket_from_a_tls_listener(start_server, pki):
    server = start_server(ECHO, pki.server())
    # The client's HTTP request is not a ClientHello: the TLS layer answers
    # with an alert (not HTTP) or drops the connection.
    with pytest.raises((websockets.InvalidHandshake, ConnectionError)):
        echo(f"ws://127.0.0.1:{server.port}/echo", [b"x"])
    assert_echoes(wss(server), trusting(pki.ca))


# --- chains and trust ------------------------------------------------------------

def test_cert_file_with_intermediate_verifies_against_the_root_alone(start_server, chain):
    server = start_server(ECHO, {"tls": True, "tls_certificates": {
        "ca": str(chain["root"]), "cert": str(chain["chain"]), "key": str(chain["key"])}})
    version, peer = assert_echoes(wss(server), trusting(chain["root"]),
                                  [binary(64 * 1024), text(1000)])
    issuer = dict(rdn[0] for rdn in peer["issuer"])
    assert issuer["commonName"] == "lapps test intermediate"


def test_leaf_alone_does_not_verify_against_the_root(start_server, chain):
    """The counterpart of the chain test: without the intermediate in the
    cert file the same client fails, so it is the server that sends it."""
    server = start_server(ECHO, {"tls": True, "tls_certificates": {
        "ca": str(chain["root"]), "cert": str(chain["leaf"]), "key": str(chain["key"])}})
    with pytest.raises(ssl.SSLCertVerificationError) as failure:
        echo(wss(server), [b"x"], trusting(chain["root"]))
    assert failure.value.verify_code == 20  # unable to get local issuer certificate


def test_client_that_does_not_trust_the_ca_fails_verification(start_server, pki, tmp_path):
    server = start_server(ECHO, pki.server())
    # Another lapps development CA: same subject name, different key.
    stranger = PKI(tmp_path, "other")
    with pytest.raises(ssl.SSLCertVerificationError):
        echo(wss(server), [b"x"], trusting(stranger.ca))
    with pytest.raises(ssl.SSLCertVerificationError):
        echo(wss(server), [b"x"], ssl.create_default_context())
    # Still serving: the failures were the clients' verdicts, not a dead server.
    assert_echoes(wss(server), trusting(pki.ca))


# --- versions and renegotiation ----------------------------------------------------

def test_tls13_only_server_refuses_a_tls12_client(start_server, pki):
    server = start_server(ECHO, pki.server(version=4))
    with pytest.raises(ssl.SSLError) as failure:
        echo(wss(server), [b"x"], trusting(pki.ca, maximum=ssl.TLSVersion.TLSv1_2))
    assert "PROTOCOL_VERSION" in failure.value.reason.upper()
    version, _ = assert_echoes(wss(server), trusting(pki.ca, minimum=ssl.TLSVersion.TLSv1_3))
    assert version == "TLSv1.3"


def test_tls12_client_is_served_when_server_version_is_3(start_server, pki):
    server = start_server(ECHO, pki.server(version=3))
    version, _ = assert_echoes(wss(server), trusting(pki.ca, maximum=ssl.TLSVersion.TLSv1_2),
                               [binary(MiB), text(1000)])
    assert version == "TLSv1.2"


def test_server_version_defaults_to_3(start_server, pki):
    settings = pki.server()
    del settings["tls_server_version"]
    server = start_server(ECHO, settings)
    version, _ = assert_echoes(wss(server), trusting(pki.ca, maximum=ssl.TLSVersion.TLSv1_2))
    assert version == "TLSv1.2"


def test_tls12_client_initiated_renegotiation_is_refused(start_server, pki):
    server = start_server(ECHO, pki.server(version=3))
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
    ctx.load_verify_locations(str(pki.ca))
    ctx.set_verify(SSL.VERIFY_PEER, lambda conn, cert, errno, depth, ok: bool(ok))
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.settimeout(None)  # pyOpenSSL wants a blocking socket; reads time out after 10 s
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 10, 0))
    conn = SSL.Connection(ctx, sock)
    try:
        conn.set_tlsext_host_name(b"localhost")
        conn.set_connect_state()
        conn.do_handshake()
        assert conn.get_protocol_version_name() == "TLSv1.2"
        assert conn.renegotiate()  # a new ClientHello is queued
        with pytest.raises(SSL.Error) as refusal:
            conn.do_handshake()
        # The server answered the new ClientHello with a no_renegotiation
        # alert (a server that allows it completes this do_handshake()).
        assert "no renegotiation" in str(refusal.value)
    finally:
        sock.close()
    assert_echoes(wss(server), trusting(pki.ca))


# --- certificates that do not fit ------------------------------------------------

def run_twistd(config, timeout=60):
    result = subprocess.run(TWISTD + ["-n", "--pidfile=", "lapps", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"), timeout=timeout)
    return result.returncode, result.stdout.decode("utf-8", "replace")


@pytest.mark.parametrize("breakage,pointer", [
    ("mismatched key", "/server/tls_certificates/key"),
    ("missing key", "/server/tls_certificates/key"),
    ("cert not PEM", "/server/tls_certificates/cert"),
])
def test_unusable_certificate_or_key_stops_twistd_with_one_line(tmp_path, pki, breakage, pointer):
    if breakage == "mismatched key":
        other = ec.generate_private_key(ec.SECP256R1())
        pki.key_file.write_bytes(devcert.pem_key(other))
    elif breakage == "missing key":
        pki.key_file.unlink()
    else:
        pki.cert_file.write_text("this is not a certificate\n")
    config = write_config(tmp_path, ECHO, pki.server())
    code, output = run_twistd(config)
    assert code == 1, output
    assert "Traceback" not in output, output
    assert "listening on" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith(f"{config}: {pointer}: "), output
    named = pki.key_file if pointer.endswith("/key") else pki.cert_file
    assert str(named) in lines[0]


# --- lapps devcert ------------------------------------------------------------------

@pytest.fixture
def shipped_config(tmp_path):
    """etc/lapps.json copied to tmp_path/etc/ (with apps/echo beside it at
    ../apps, where it points), on an ephemeral loopback port."""
    etc = tmp_path / "etc"
    etc.mkdir()
    config = json.loads((REPO / "etc" / "lapps.json").read_text())
    assert config["server"]["tls"] is True
    assert config["directories"]["applications"] == "../apps"
    config["server"].update(ip="127.0.0.1", port=0)
    shutil.copytree(APPS / "echo", tmp_path / "apps" / "echo")
    path = etc / "lapps.json"
    path.write_text(json.dumps(config, indent=2))
    certs = config["server"]["tls_certificates"]
    return path, {k: etc / certs[k] for k in ("ca", "cert", "key")}


def run_devcert(config, cwd):
    return subprocess.run([str(LAPPS), "devcert", str(config)], capture_output=True, text=True,
                          cwd=cwd, timeout=60)


def snapshot(paths):
    return {k: (p.read_bytes(), os.stat(p).st_mtime_ns, stat.S_IMODE(os.stat(p).st_mode))
            for k, p in paths.items()}


def test_lapps_devcert_writes_a_ca_and_cert_that_the_server_serves(shipped_config, tmp_path):
    config, files = shipped_config
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    first = run_devcert(config, cwd=elsewhere)
    assert first.returncode == 0, first.stdout + first.stderr
    assert sorted(first.stdout.split()) == sorted(["wrote"] * 3 + [str(p) for p in files.values()])
    assert not list(elsewhere.iterdir())  # paths resolve against the config, not the cwd
    assert stat.S_IMODE(os.stat(files["key"]).st_mode) == 0o600

    leaf = x509.load_pem_x509_certificates(files["cert"].read_bytes())[0]
    san = leaf.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)

    server = Server(config)
    try:
        assert server.count(r"listening on wss://") == 1
        version, _ = assert_echoes(wss(server), trusting(files["ca"]), [binary(MiB), text(MiB)])
        assert version == "TLSv1.3"
    finally:
        server.stop()

    before = snapshot(files)
    second = run_devcert(config, cwd=elsewhere)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "wrote" not in second.stdout
    assert "nothing written" in second.stdout
    assert snapshot(files) == before


def test_lapps_devcert_leaves_a_partial_set_alone(shipped_config, tmp_path):
    config, files = shipped_config
    assert run_devcert(config, cwd=tmp_path).returncode == 0
    files["cert"].unlink()
    before = snapshot({k: p for k, p in files.items() if k != "cert"})
    again = run_devcert(config, cwd=tmp_path)
    assert again.returncode == 0
    assert "wrote" not in again.stdout
    assert not files["cert"].exists()
    assert snapshot({k: p for k, p in files.items() if k != "cert"}) == before


def test_devcert_certificates_verify_under_strict_x509_checks(start_server, tmp_path):
    """Python 3.13+ ``ssl.create_default_context()`` sets VERIFY_X509_STRICT
    (and VERIFY_X509_PARTIAL_CHAIN); OpenSSL then requires an Authority Key
    Identifier on the leaf and a Subject Key Identifier on the CA. A dev
    certificate that only verifies on older Pythons is of little use."""
    d = tmp_path / "ssl"
    written = devcert.ensure(str(d / "ca.pem"), str(d / "cert.pem"), str(d / "key.pem"))
    assert len(written) == 3
    server = start_server(ECHO, {"tls": True, "tls_certificates": {
        "ca": str(d / "ca.pem"), "cert": str(d / "cert.pem"), "key": str(d / "key.pem")}})
    ctx = trusting(d / "ca.pem")
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT | ssl.VERIFY_X509_PARTIAL_CHAIN
    assert_echoes(wss(server), ctx)


# --- IPv6 --------------------------------------------------------------------------

@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_ipv6_loopback_listener(start_server, pki, scheme):
    settings = {"ip": "::1", **(pki.server() if scheme == "wss" else {})}
    server = start_server(ECHO, settings)
    assert server.host == "::1"
    url = f"{scheme}://[::1]:{server.port}/echo"
    ctx = trusting(pki.ca) if scheme == "wss" else None

    async def go():
        async with websockets.connect(url, ssl=ctx, max_size=None) as ws:
            assert ws.transport.get_extra_info("peername")[:2] == ("::1", server.port)
            await ws.send(binary(MiB))
            assert await ws.recv() == binary(MiB)
            await ws.send(text(1000))
            assert await ws.recv() == text(1000)

    asyncio.run(go())
