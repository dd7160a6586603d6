#!/usr/bin/python3
"""Debian's OpenStack Placement (python3-placement) for one test.

usage: placement_server.py DIR

Writes DIR/placement.conf (SQLite database DIR/placement.db, created at start-up by
sync_on_startup; auth_strategy noauth2, which takes the X-Auth-Token "admin" as an admin),
serves Placement's own WSGI application (placement.wsgi.init_application) with wsgiref on
127.0.0.1 at a port the kernel picks, writes that port to DIR/port once it listens, and serves
until SIGTERM. The test that started it stops it; nothing outlives it but DIR.

Another writer, on demand: while DIR/conflicts holds a number N > 0, each request
PUT /resource_providers/{uuid}/traits first decrements N and lets a second writer update that
provider through Placement's own API (in process, before the request is served): it adds a
trait CUSTOM_OTHER_WRITER_<k> (k counts such writes) to the provider's traits, which bumps the
provider's generation. The request then carries the generation its sender read before, and
Placement answers 409 as it would to a real concurrent update. Every such PUT that arrives is
counted in DIR/trait_puts.
"""
import ctypes
import io
import json
import os
import signal
import sys
import wsgiref.simple_server


class QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *args):  # the access log would fill the test output
        pass


def _call(app, environ, method, path, body=None):
    """One request to `app` as the admin, in process; returns (status code, parsed body)."""
    env = dict(environ)
    data = json.dumps(body).encode() if body is not None else b""
    env.update({
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(data)),
        "wsgi.input": io.BytesIO(data),
        "HTTP_X_AUTH_TOKEN": "admin",
        "HTTP_OPENSTACK_API_VERSION": "placement 1.6",
    })
    status = []
    out = b"".join(app(env, lambda s, h, exc=None: status.append(s)))
    code = int(status[0].split()[0])
    if code >= 300:
        raise RuntimeError(f"other writer: {method} {path}: {status[0]} {out!r}")
    return code, (json.loads(out) if out else None)


class OtherWriter:
    """WSGI middleware: the second writer described in the module's docstring."""

    def __init__(self, app, d):
        self.app, self.d, self.writes = app, d, 0

    def _bump(self, environ, path):
        self.writes += 1
        trait = f"CUSTOM_OTHER_WRITER_{self.writes}"
        _call(self.app, environ, "PUT", f"/traits/{trait}")
        _, cur = _call(self.app, environ, "GET", path)
        _call(self.app, environ, "PUT", path, {
            "resource_provider_generation": cur["resource_provider_generation"],
            "traits": cur["traits"] + [trait],
        })

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        parts = path.strip("/").split("/")
        if (environ.get("REQUEST_METHOD") == "PUT" and len(parts) == 3
                and parts[0] == "resource_providers" and parts[2] == "traits"):
            counter = os.path.join(self.d, "trait_puts")
            n = int(open(counter).read()) if os.path.exists(counter) else 0
            _write(counter, n + 1)
            control = os.path.join(self.d, "conflicts")
            left = int(open(control).read()) if os.path.exists(control) else 0
            if left > 0:
                _write(control, left - 1)
                self._bump(environ, path)
        return self.app(environ, start_response)


def _write(path, value):
    with open(path + ".tmp", "w") as f:
        f.write(f"{value}\n")
    os.rename(path + ".tmp", path)


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

    app = OtherWriter(wsgi.init_application(), d)
    server = wsgiref.simple_server.make_server("127.0.0.1", 0, app, handler_class=QuietHandler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    _write(os.path.join(d, "port"), server.server_port)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
