"""LAppSService embedded in someone else's Twisted program."""

import asyncio
import sys
import textwrap

import websockets

from conftest import TWISTD, Server, reactive, write_config


def test_lapps_serves_inside_an_application_beside_another_service(tmp_path):
    config = write_config(tmp_path, {"echo": reactive("/echo")})
    tac = tmp_path / "embedded.tac"
    tac.write_text(textwrap.dedent(f"""
        from twisted.application import internet, service
        from twisted.internet import protocol
        from twisted.protocols.basic import LineReceiver
        from lapps.app import LAppSService

        class Shout(LineReceiver):
            def lineReceived(self, line):
                self.sendLine(line.upper())

        class ShoutFactory(protocol.ServerFactory):
            protocol = Shout
            def startFactory(self):
                print("shout service ready", flush=True)

        application = service.Application("embedded")
        LAppSService({str(config)!r}).setServiceParent(application)
        shout = internet.TCPServer(0, ShoutFactory(), interface="127.0.0.1")
        shout.setServiceParent(application)
    """))
    server = Server(config, argv=TWISTD + ["-n", "--pidfile=", "-y", str(tac)])
    try:
        port = int(server.wait_for(r"ShoutFactory starting on (\d+)").group(1))

        async def go():
            async with websockets.connect(server.url("/echo")) as ws:
                await ws.send(b"embedded")
                echoed = await ws.recv()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"hello\r\n")
            shouted = await reader.readline()
            writer.close()
            return echoed, shouted

        assert asyncio.run(go()) == (b"embedded", b"HELLO\r\n")
    finally:
        server.stop()


def test_lapps_touches_no_signal_handler_nor_the_global_log(tmp_path):
    """Built and started by hand, LAppSService changes no signal disposition,
    begins no global logging, returns without running the reactor, and
    serves once its host runs the reactor."""
    config = write_config(tmp_path, {"echo": reactive("/echo")})
    script = tmp_path / "host.py"
    script.write_text(textwrap.dedent(f"""
        import signal
        from twisted.internet import reactor
        from twisted.logger import globalLogBeginner

        began = []
        globalLogBeginner.beginLoggingTo = lambda *a, **k: began.append(a)
        signals = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR1]
        before = [signal.getsignal(s) for s in signals]

        from lapps.app import LAppSService
        lapps = LAppSService({str(config)!r})
        lapps.startService()
        assert [signal.getsignal(s) for s in signals] == before, "signal handlers changed"
        assert not began, "global logging was begun"
        assert not reactor.running
        port = lapps.listener.port.getHost().port
        print(f"listening on ws://127.0.0.1:0 (127.0.0.1:{{port}})", flush=True)
        reactor.callWhenRunning(lambda: print("host reactor running", flush=True))
        reactor.run(installSignalHandlers=False)
    """))
    server = Server(config, argv=[sys.executable, str(script)], ready=None)  # no log observer
    try:
        server.wait_for("host reactor running")

        async def go():
            async with websockets.connect(server.url("/echo")) as ws:
                await ws.send("by hand")
                return await ws.recv()

        assert asyncio.run(go()) == "by hand"
    finally:
        server.process.kill()
        server.process.wait()
