"""An ordinary Flask app for the end-to-end tests: it knows nothing of certificates or
signatures. Its outbound calls use `requests`, which honours HTTP_PROXY, so a sidecar's
egress signs them and carries them over mutual TLS.

Routes:
  /whoami, /fl/update   echo what arrived: path, headers (lower-cased), body
  /slow?s=1             answer after s seconds (for the graceful-shutdown test)
  /call                 make the outbound request described by the JSON body
                        {method, url, json, headers} and return {status, body}

Prints `listening on 127.0.0.1:<port>` once it serves (it binds port 0).
"""

import os
import time

import requests
from flask import Flask, jsonify, request
from werkzeug.serving import make_server

app = Flask(__name__)
NAME = os.environ.get("APP_NAME", "app")
# One session: keep-alive to the sidecar's egress, as a long-running app would have.
SESSION = requests.Session()


def echo():
    return jsonify(
        app=NAME,
        path=request.full_path.rstrip("?"),
        headers={k.lower(): v for k, v in request.headers.items()},
        body=request.get_data(as_text=True),
    )


@app.route("/whoami", methods=["GET", "POST"])
def whoami():
    return echo()


@app.route("/fl/update", methods=["POST"])
def fl_update():
    return echo()


@app.route("/slow")
def slow():
    time.sleep(float(request.args.get("s", "1")))
    return jsonify(app=NAME, slept=True)


@app.route("/call", methods=["POST"])
def call():
    spec = request.get_json()
    try:
        answer = SESSION.request(
            spec.get("method", "POST"),
            spec["url"],
            json=spec.get("json"),
            headers=spec.get("headers", {}),
            timeout=15,
        )
    except requests.RequestException as e:
        return jsonify(status=0, error=str(e))
    try:
        body = answer.json()
    except ValueError:
        body = answer.text
    return jsonify(status=answer.status_code, body=body)


if __name__ == "__main__":
    server = make_server("127.0.0.1", 0, app, threaded=True)
    print(f"listening on 127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()
