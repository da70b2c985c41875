"""The ``lapps`` command: ``lapps check CONFIG`` and ``lapps devcert CONFIG``."""

import argparse
import sys

from lapps import config as configuration, devcert


def check(path):
    """Validate the config and load every service module, as ``twistd`` would."""
    from lapps.app import LAppSService
    try:
        LAppSService(path)
    except configuration.ConfigError as e:
        for line in e.lines:
            print(line)
        return 1
    print(f"{path}: ok")
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


def main(argv=None):
    parser = argparse.ArgumentParser(prog="lapps", description="lapps server tools")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="validate a config and load its services").add_argument("config")
    commands.add_parser("devcert", help="create a development CA and localhost certificate "
                        "where the config points, if absent").add_argument("config")
    args = parser.parse_args(argv)
    return {"check": check, "devcert": make_devcert}[args.command](args.config)


if __name__ == "__main__":
    sys.exit(main())
