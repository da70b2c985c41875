"""The ``lapps`` command: ``lapps check CONFIG``, ``lapps devcert CONFIG``
and ``lapps lar pack|list|verify|sign|keygen``."""

import argparse
import sys

from lapps import config as configuration, devcert
from lapps.deploy import commands as lar_commands, lar


def check(path):
    """Validate the config and load every service module, as ``twistd`` would."""
    from lapps.app import LAppSService
    try:
        service = LAppSService(path)
    except configuration.ConfigError as e:
        for line in e.lines:
            print(line)
        return 1
    print(f"{path}: ok")
    for name, entry in sorted(service.config.deployed.items()):
        print(f"deployed: {name} from {entry.get('archive')} (sha256 {entry.get('sha256')}, "
              f"{entry.get('deployed_at')})")
    return 0


def make_devcert(path):
    """Create the development CA and localhost certificate the config names,
    unless any of them exists already."""
    try:
        cfg = configuration.load(path, check_certificates=False)
    except configuration.ConfigError as e:
        for line in e.lines:
            print(line)
        return 1
    written = devcert.ensure(cfg.ca_file, cfg.cert_file, cfg.key_file)
    for p in written:
        print(f"wrote {p}")
    if not written:
        print("certificates already present; nothing written")
    return 0


def _lar_parser(commands):
    archives = commands.add_parser("lar", help="make, list, verify and sign .lar archives")
    actions = archives.add_subparsers(dest="action", required=True)
    pack = actions.add_parser("pack", help="pack a service folder (DIR/NAME.json, "
                              "DIR/NAME.lua, ...) into a .lar")
    pack.add_argument("directory")
    pack.add_argument("-o", "--output", help="the archive (default: the folder's name + .lar)")
    actions.add_parser("list", help="list an archive's files").add_argument("archive")
    actions.add_parser("verify", help="check an archive as a deploy would").add_argument(
        "archive")
    sign = actions.add_parser("sign", help="write ARCHIVE.sig with an Ed25519 private key")
    sign.add_argument("archive")
    sign.add_argument("--key", required=True, help="the private key (PEM, from keygen)")
    actions.add_parser("keygen", help="make an Ed25519 key pair: the private key to a new "
                       "file, the public key (for deploy.trusted_keys) printed").add_argument(
        "private_key")


def _lar(args):
    run = {"pack": lambda: lar_commands.pack(args.directory, args.output),
           "list": lambda: lar_commands.list_files(args.archive),
           "verify": lambda: lar_commands.verify(args.archive),
           "sign": lambda: lar_commands.sign(args.archive, args.key),
           "keygen": lambda: lar_commands.keygen(args.private_key)}[args.action]
    try:
        return run()
    except (lar.LarError, OSError, ValueError) as e:
        print(f"lapps lar {args.action}: {e}", file=sys.stderr)
        return 1


def main(argv=None):
    parser = argparse.ArgumentParser(prog="lapps", description="lapps server tools")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="validate a config and load its services").add_argument("config")
    commands.add_parser("devcert", help="create a development CA and localhost certificate "
                        "where the config points, if absent").add_argument("config")
    _lar_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "lar":
        return _lar(args)
    return {"check": check, "devcert": make_devcert}[args.command](args.config)


if __name__ == "__main__":
    sys.exit(main())
