"""The seed's peer, nginx + lua-resty-websocket: an echo on one loopback
port, ws or wss, in one nginx process (``master_process off``) or a master
and N worker processes, from a config written at run time. nginx and its Lua module come from Debian
(``apt-get install nginx libnginx-mod-http-lua``); the library is in
``shared/peers/lua-resty-websocket``."""

import os
import shutil
import subprocess
from pathlib import Path

MODULES = Path("/usr/lib/nginx/modules")
ECHO = Path(__file__).with_name("nginx_echo.lua")
PACKAGES = ["nginx", "libnginx-mod-http-lua"]


def missing(shared):
    """What stops the peer from running, as text (empty when nothing)."""
    library = Path(shared) / "peers" / "lua-resty-websocket" / "lib"
    module = MODULES / "ngx_http_lua_module.so"
    wanted = [("nginx", shutil.which("nginx")), (str(module), module.exists()),
              (str(library), library.is_dir())]
    return [name for name, present in wanted if not present]


def install(shared):
    """Install nginx and its Lua module with apt-get when they are missing
    and we are root; the list of what is still missing."""
    from_debian = {"nginx", str(MODULES / "ngx_http_lua_module.so")}
    if from_debian & set(missing(shared)) and os.geteuid() == 0:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update"], stdout=subprocess.DEVNULL, env=env)
        subprocess.run(["apt-get", "install", "-y", *PACKAGES], stdout=subprocess.DEVNULL, env=env)
    return missing(shared)


def _config(directory, port, shared, certs, workers):
    listen = f"127.0.0.1:{port}" + (" ssl" if certs else "")
    tls = (f"ssl_certificate {certs['cert']};\n        ssl_certificate_key {certs['key']};"
           if certs else "")
    temp = " ".join(f"{kind}_temp_path {directory}/{kind};"
                    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    library = Path(shared).resolve() / "peers" / "lua-resty-websocket" / "lib"
    return f"""load_module {MODULES}/ndk_http_module.so;
load_module {MODULES}/ngx_http_lua_module.so;
daemon off;
master_process {"on" if workers > 1 else "off"};
worker_processes {workers};
worker_rlimit_nofile 65536;
error_log stderr warn;
pid {directory}/nginx.pid;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    {temp}
    lua_package_path "{library}/?.lua;;";
    lua_socket_log_errors off;
    server {{
        listen {listen};
        {tls}
        location /echo {{ content_by_lua_file {ECHO}; }}
    }}
}}
"""


def argv(directory, port, shared, certs=None, workers=1):
    """The command that runs the echo on ``port`` (wss when ``certs`` has
    ``cert`` and ``key``) in ``workers`` worker processes, its config and
    temp files in ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "nginx.conf"
    conf.write_text(_config(directory, port, shared, certs, workers))
    return ["nginx", "-e", "stderr", "-p", str(directory), "-c", str(conf)]
