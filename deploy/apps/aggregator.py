"""The federated-learning aggregator: an ordinary Flask app that averages model updates.

It knows nothing of certificates or signatures. Its sidecar admits only requests from
nodes with a valid, unrevoked certificate, with a valid message signature that was not
replayed, and tells it who sent each one in `X-Verified-Node-Id` (after stripping any such
header that came from outside). So this app trusts that header and nothing in the body.

The model is a line, y = w*x + b. Each round the nodes fetch the global weights, train on
their own data and post their weights; a round closes when every expected node has posted
(the quorum) or ROUND_TIMEOUT seconds after its first update, and the new global weights
are the sample-weighted average of that round's updates (FedAvg). The quorum is
ROUND_QUORUM, or with ROUND_QUORUM=auto the number of live agents the trust authority
counts (`by_role.agent.live` in its /trust/status, read every QUORUM_REFRESH seconds), so
a network scaled from 5 to 100 agents waits for all of them rather than closing each
round after the first five.

Routes:
  GET  /fl/model    {round, weights: [w, b], quorum}
  POST /fl/update   {round, weights: [w, b], samples} -> 200 {accepted: true, round}
                    400 malformed, 401 no verified identity, 409 stale round or a second
                    update from the same node in a round
  GET  /fl/rounds   closed rounds: [{round, updates: {node: {weights, samples}}, aggregate}]
  GET  /healthz

Environment: LISTEN (host:port, default 127.0.0.1:0), ROUND_QUORUM (a number, or `auto`;
default 5), QUORUM_REFRESH (seconds, default 5), ROUND_TIMEOUT (seconds, default 5).
Prints `listening on <host>:<port>` once it serves.

PUBLIC_LISTEN (optional, e.g. 0.0.0.0:5001) adds a second, read-only listener for the
operator's dashboard, as the seed's backend had: GET /trust/status (fetched from
AUTHORITY_URL, default http://authority, through HTTP_PROXY: the sidecar signs it and
carries it over mTLS to the authority's sidecar), GET /fl/rounds, GET /healthz. It never
reads X-Verified-* headers and accepts no update, so exposing it admits nobody.
"""

import math
import os
import threading
import time

from flask import Flask, jsonify, request
from werkzeug.serving import make_server

app = Flask(__name__)
QUORUM_SETTING = os.environ.get("ROUND_QUORUM", "5").strip()
AUTO_QUORUM = QUORUM_SETTING == "auto"
# Until the authority answers, `auto` waits for five, as the fixed default does.
quorum = 5 if AUTO_QUORUM else int(QUORUM_SETTING)
QUORUM_REFRESH = float(os.environ.get("QUORUM_REFRESH", "5"))
TIMEOUT = float(os.environ.get("ROUND_TIMEOUT", "5"))

lock = threading.Lock()
state = {
    "round": 1,
    "weights": [0.0, 0.0],
    "updates": {},  # node id -> {weights, samples}
    "opened": None,  # monotonic time of the round's first update
    "history": [],
}


def close_round():
    """Averages the open round's updates into the global model (call with the lock held)."""
    updates = state["updates"]
    total = sum(u["samples"] for u in updates.values())
    aggregate = [
        sum(u["weights"][i] * u["samples"] for u in updates.values()) / total
        for i in range(2)
    ]
    state["history"].append(
        {"round": state["round"], "updates": updates, "aggregate": aggregate}
    )
    app.logger.info(
        "round %d closed with %d updates: w=%.4f b=%.4f",
        state["round"], len(updates), aggregate[0], aggregate[1],
    )
    state["weights"] = aggregate
    state["round"] += 1
    state["updates"] = {}
    state["opened"] = None


def closer():
    """Closes a round that has waited ROUND_TIMEOUT for its quorum."""
    while True:
        time.sleep(0.2)
        with lock:
            opened = state["opened"]
            if opened is not None and time.monotonic() - opened >= TIMEOUT:
                close_round()


@app.get("/fl/model")
def model():
    with lock:
        return jsonify(round=state["round"], weights=state["weights"], quorum=quorum)


def valid_update(body):
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    weights, samples, rnd = body.get("weights"), body.get("samples"), body.get("round")
    if not isinstance(rnd, int):
        return "round must be an integer"
    if not (
        isinstance(weights, list)
        and len(weights) == 2
        and all(isinstance(w, (int, float)) and math.isfinite(w) for w in weights)
    ):
        return "weights must be two finite numbers"
    if not isinstance(samples, int) or not 1 <= samples <= 1_000_000:
        return "samples must be an integer from 1 to 1000000"
    return None


@app.post("/fl/update")
def update():
    node = request.headers.get("X-Verified-Node-Id")
    if not node:
        return jsonify(error="no verified node identity: updates come through the sidecar"), 401
    body = request.get_json(silent=True)
    problem = valid_update(body)
    if problem:
        return jsonify(error=problem), 400
    with lock:
        if body["round"] != state["round"]:
            return jsonify(error=f"round {body['round']} is not open (round {state['round']} is)"), 409
        if node in state["updates"]:
            return jsonify(error=f"node {node} already sent an update for round {state['round']}"), 409
        state["updates"][node] = {
            "weights": [float(w) for w in body["weights"]],
            "samples": body["samples"],
        }
        if state["opened"] is None:
            state["opened"] = time.monotonic()
        accepted_round = state["round"]
        if len(state["updates"]) >= quorum:
            close_round()
    return jsonify(accepted=True, round=accepted_round)


@app.get("/fl/rounds")
def rounds():
    with lock:
        return jsonify(state["history"])


@app.get("/healthz")
def healthz():
    return jsonify(ok=True)


public = Flask("aggregator-public")
AUTHORITY = os.environ.get("AUTHORITY_URL", "http://authority").rstrip("/")


@public.get("/trust/status")
def public_trust_status():
    import requests  # only the public listener calls out

    try:
        answer = requests.get(f"{AUTHORITY}/trust/status", timeout=10)
    except requests.RequestException as e:
        return jsonify(error=f"the authority could not be reached: {e}"), 502
    return answer.content, answer.status_code, {"content-type": "application/json"}


def follow_live_agents():
    """ROUND_QUORUM=auto: keeps the quorum at the authority's count of live agents."""
    import requests

    global quorum
    failing = False
    while True:
        try:
            status = requests.get(f"{AUTHORITY}/trust/status", timeout=10).json()
            live = int(status["by_role"]["agent"]["live"])
            failing = False
            if live >= 1 and live != quorum:
                with lock:
                    app.logger.warning("quorum %d -> %d: the authority counts %d live agents", quorum, live, live)
                    quorum = live
                    if len(state["updates"]) >= quorum:
                        close_round()
        except (requests.RequestException, ValueError, KeyError, TypeError) as e:
            if not failing:
                app.logger.warning("cannot read the live agents at %s (%s); the quorum stays %d", AUTHORITY, e, quorum)
            failing = True
        time.sleep(QUORUM_REFRESH)


public.add_url_rule("/fl/rounds", view_func=rounds)
public.add_url_rule("/healthz", view_func=healthz)


def serve_public(address):
    host, _, port = address.rpartition(":")
    server = make_server(host, int(port), public, threaded=True)
    print(f"public listening on {host}:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    host, _, port = os.environ.get("LISTEN", "127.0.0.1:0").rpartition(":")
    threading.Thread(target=closer, daemon=True).start()
    if AUTO_QUORUM:
        threading.Thread(target=follow_live_agents, daemon=True).start()
    if os.environ.get("PUBLIC_LISTEN"):
        threading.Thread(target=serve_public, args=(os.environ["PUBLIC_LISTEN"],), daemon=True).start()
    server = make_server(host, int(port), app, threaded=True)
    print(f"listening on {host}:{server.server_port}", flush=True)
    server.serve_forever()
