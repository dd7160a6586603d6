#!/usr/bin/python3
"""Debian's OpenStack Placement (python3-placement) for one test.

usage: placement_server.py DIR

Writes DIR/placement.conf (SQLite database DIR/placement.db, created at start-up by
sync_on_startup; auth_strategy noauth2, which takes the X-Auth-Token "admin" as an admin),
serves Placement's own WSGI application (placement.wsgi.init_application) with wsgiref on
127.0.0.1 at a port the kernel picks, writes that port to DIR/port once it listens, and serves
until SIGTERM. The test that started it stops it; nothing outlives it but DIR.
"""
import ctypes
import os
import signal
import sys
import wsgiref.simple_server


class QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *args):  # the access log would fill the test output
        pass


def main():
    # Dies with the test that started it, even when that test crashed.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:
        sys.exit("placement_server: parent already gone")
    d = os.path.abspath(sys.argv[1])
    with open(os.path.join(d, "placement.conf"), "w") as f:
        f.write(
            "[DEFAULT]\n"
            "debug = False\n"
            "[api]\n"
            "auth_strategy = noauth2\n"
            "[placement_database]\n"
            f"connection = sqlite:///{d}/placement.db\n"
            "sync_on_startup = True\n"
        )
    # placement.wsgi reads placement.conf from this directory.
    os.environ["OS_PLACEMENT_CONFIG_DIR"] = d
    from placement import wsgi

    app = wsgi.init_application()
    server = wsgiref.simple_server.make_server("127.0.0.1", 0, app, handler_class=QuietHandler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    tmp = os.path.join(d, "port.tmp")
    with open(tmp, "w") as f:
        f.write(f"{server.server_port}\n")
    os.rename(tmp, os.path.join(d, "port"))
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
