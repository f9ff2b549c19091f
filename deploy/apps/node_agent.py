"""A federated-learning node agent: an ordinary Flask app that trains on local data.

It knows nothing of certificates or signatures. It talks to the aggregator at
AGGREGATOR_URL (default http://aggregator) with `requests`, which honours HTTP_PROXY: its
sidecar's egress signs each request, carries it over mutual TLS to the aggregator's
sidecar and checks that the peer is the aggregator.

Each round it fetches the global model (y = w*x + b), runs a few epochs of gradient
descent on its own synthetic data (drawn from y = 2x - 0.5 plus noise, seeded by
NODE_SEED so every node's data differs), and posts its weights and sample count.

Routes:
  GET /status   {sent: [{round, weights, samples, status}], errors, last_error}
  GET /healthz

Environment: LISTEN (default 127.0.0.1:0), AGGREGATOR_URL, NODE_SEED (default 1),
SAMPLES (default 50), ROUND_INTERVAL (seconds between model checks, default 1).
Prints `listening on <host>:<port>` once it serves.
"""

import os
import random
import threading

import requests
from flask import Flask, jsonify
from werkzeug.serving import make_server

app = Flask(__name__)
AGGREGATOR = os.environ.get("AGGREGATOR_URL", "http://aggregator").rstrip("/")
SEED = os.environ.get("NODE_SEED", "1")  # any string: a number, a pod uid
SAMPLES = int(os.environ.get("SAMPLES", "50"))
INTERVAL = float(os.environ.get("ROUND_INTERVAL", "1"))

rng = random.Random(SEED)
DATA = [(x, 2.0 * x - 0.5 + rng.gauss(0, 0.1)) for x in (rng.uniform(-1, 1) for _ in range(SAMPLES))]

lock = threading.Lock()
status = {"sent": [], "errors": 0, "last_error": None}
stop = threading.Event()


def train(weights, epochs=5, rate=0.2):
    """Full-batch gradient descent on the local data, from the global weights."""
    w, b = weights
    n = len(DATA)
    for _ in range(epochs):
        gw = sum((w * x + b - y) * x for x, y in DATA) * 2 / n
        gb = sum((w * x + b - y) for x, y in DATA) * 2 / n
        w, b = w - rate * gw, b - rate * gb
    return [w, b]


def note_error(message):
    with lock:
        status["errors"] += 1
        status["last_error"] = message
    app.logger.warning("%s", message)


def rounds():
    session = requests.Session()  # keep-alive to the sidecar's egress
    last_sent = 0
    while not stop.wait(INTERVAL):
        try:
            answer = session.get(f"{AGGREGATOR}/fl/model", timeout=10)
            if answer.status_code != 200:
                note_error(f"GET /fl/model: {answer.status_code} {answer.text[:200]}")
                continue
            model = answer.json()
            if model["round"] <= last_sent:
                continue
            weights = train(model["weights"])
            posted = session.post(
                f"{AGGREGATOR}/fl/update",
                json={"round": model["round"], "weights": weights, "samples": SAMPLES},
                timeout=10,
            )
            last_sent = model["round"]
            with lock:
                status["sent"].append(
                    {"round": model["round"], "weights": weights, "samples": SAMPLES,
                     "status": posted.status_code}
                )
            if posted.status_code != 200:
                note_error(f"POST /fl/update: {posted.status_code} {posted.text[:200]}")
        except (requests.RequestException, ValueError, KeyError) as e:
            note_error(f"{type(e).__name__}: {e}")


@app.get("/status")
def get_status():
    with lock:
        return jsonify(status)


@app.get("/healthz")
def healthz():
    return jsonify(ok=True)


if __name__ == "__main__":
    host, _, port = os.environ.get("LISTEN", "127.0.0.1:0").rpartition(":")
    server = make_server(host, int(port), app, threaded=True)
    threading.Thread(target=rounds, daemon=True).start()
    print(f"listening on {host}:{server.server_port}", flush=True)
    server.serve_forever()
