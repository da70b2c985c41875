"""Which services a config starts, in which order: a question the server,
a worker and the supervisor's status page ask alike, so it lives apart from
all three."""

from twisted.logger import Logger

log = Logger(namespace="lapps")


def services_to_start(config):
    """Every ``auto_start`` service and, recursively, what it depends on.
    A dependency without a descriptor is logged and ignored."""
    chosen = []

    def add(name, wanted_by):
        if name in chosen:
            return
        if name not in config.services:
            log.warn("service {wanted_by} depends on {name}, which has no descriptor; ignored",
                     lapps_event="service.missing_dependency", wanted_by=wanted_by, name=name)
            return
        for dependency in config.services[name].depends:
            if dependency != name:
                add(dependency, name)
        chosen.append(name)

    for name, service in config.services.items():
        if service.auto_start:
            add(name, None)
    return chosen
