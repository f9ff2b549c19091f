"""A Flask app that reports how it routed each request, for the differential tests of the
sidecar's one reading of a request (tests/e2e/request_view.rs). It runs on werkzeug's own
server or under gunicorn, the two parsers the network's apps run on.

Routes, by the class the sidecar's configuration gives them:
  /fl, /fl/<path>                     signed    (the sidecar requires a message signature)
  /trust/revoke, /trust/revoke/<path> admin     (the admin-only-revoke plugin guards it)
  /trust/status, /trust/status/<path> anonymous (reachable without a client certificate)
  /, /<path>                          other

Every answer is JSON: the rule that matched, the class, the path as the app decoded it
(`request.path`), the target exactly as the server received it, the Host, and the headers
as the app reads them (WSGI environ, so `_` and `-` spellings meet here).

Usage: route_app.py werkzeug|gunicorn; prints `listening on 127.0.0.1:<port>` once it
serves (it binds port 0).
"""

import sys

from flask import Flask, jsonify, request

app = Flask(__name__)
# Report what arrives as it is; the sidecar's canonical form has no `//` to merge.
app.url_map.merge_slashes = False
app.url_map.strict_slashes = False

CLASSES = {
    "/fl": "signed",
    "/fl/<path:rest>": "signed",
    "/trust/revoke": "admin",
    "/trust/revoke/<path:rest>": "admin",
    "/trust/status": "anonymous",
    "/trust/status/<path:rest>": "anonymous",
    "/": "other",
    "/<path:rest>": "other",
}


def report(rest=None):
    rule = request.url_rule.rule if request.url_rule else None
    env = request.environ
    return jsonify(
        rule=rule,
        route=CLASSES.get(rule, "none"),
        path=request.path,
        target=env.get("RAW_URI") or env.get("REQUEST_URI"),
        host=request.host,
        headers=[[k, v] for k, v in request.headers.items()],
    )


for rule in CLASSES:
    app.add_url_rule(rule, rule, report, methods=["GET", "POST", "PUT", "DELETE"])


def werkzeug():
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    print(f"listening on 127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()


def gunicorn():
    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):
        def load_config(self):
            self.cfg.set("bind", "127.0.0.1:0")
            self.cfg.set("workers", 1)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", 4)
            self.cfg.set("when_ready", ready)

        def load(self):
            return app

    def ready(server):
        host, port = server.LISTENERS[0].sock.getsockname()[:2]
        print(f"listening on {host}:{port}", flush=True)

    Server().run()


if __name__ == "__main__":
    {"werkzeug": werkzeug, "gunicorn": gunicorn}[sys.argv[1]]()
