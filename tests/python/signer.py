#!/usr/bin/env python3
"""An outside client of the trust-proxy signature scheme, written from the documentation
alone (docs/TRUST_GUIDE.md, "Message signatures") with the `cryptography` package.

    signer.py sign   --key K --cert C --node-id N --method M --authority A --path P [--body F] [--timestamp T] [--max-salt]
    signer.py verify --cert C --headers H.json --method M --authority A --path P [--body F]

`sign` prints the five headers as JSON; `verify` exits 0 if the signature is good, 1 if not.
"""
import argparse
import base64
import hashlib
import json
import os
import sys
import time

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding


def canonical(method, authority, path, from_node, timestamp, nonce, body):
    body_digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    lines = ["tpm-sig-v1", method.upper(), authority.lower(), path, from_node, timestamp, nonce, body_digest]
    return "\n".join(lines).encode()


def fingerprint(cert):
    der = cert.public_bytes(serialization.Encoding.DER)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def read_body(path):
    if not path:
        return b""
    with open(path, "rb") as f:
        return f.read()


def sign(args):
    with open(args.key, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    with open(args.cert, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    timestamp = str(args.timestamp if args.timestamp is not None else int(time.time()))
    nonce = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
    message = canonical(args.method, args.authority, args.path, args.node_id, timestamp, nonce, read_body(args.body))
    # The scheme fixes the salt at 32 bytes; cryptography's default (MAX_LENGTH) is refused.
    salt = padding.PSS.MAX_LENGTH if args.max_salt else 32
    signature = key.sign(message, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=salt), hashes.SHA256())
    print(json.dumps({
        "X-From-Node": args.node_id,
        "X-Timestamp": timestamp,
        "X-Nonce": nonce,
        "X-Node-Auth": fingerprint(cert),
        "X-Signature": base64.b64encode(signature).decode(),
    }))


def verify(args):
    with open(args.cert, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(args.headers) as f:
        h = {k.lower(): v for k, v in json.load(f).items()}
    if h["x-node-auth"] != fingerprint(cert):
        print("fingerprint mismatch", file=sys.stderr)
        return 1
    message = canonical(args.method, args.authority, args.path, h["x-from-node"], h["x-timestamp"], h["x-nonce"], read_body(args.body))
    try:
        cert.public_key().verify(
            base64.b64decode(h["x-signature"]), message,
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256())
    except InvalidSignature:
        print("bad signature", file=sys.stderr)
        return 1
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("sign", "verify"):
        s = sub.add_parser(name)
        s.add_argument("--cert", required=True)
        s.add_argument("--method", required=True)
        s.add_argument("--authority", required=True)
        s.add_argument("--path", required=True)
        s.add_argument("--body")
    sub.choices["sign"].add_argument("--key", required=True)
    sub.choices["sign"].add_argument("--node-id", required=True)
    sub.choices["sign"].add_argument("--timestamp", type=int)
    sub.choices["sign"].add_argument("--max-salt", action="store_true")
    sub.choices["verify"].add_argument("--headers", required=True)
    args = p.parse_args()
    if args.cmd == "sign":
        sign(args)
        return 0
    return verify(args)


if __name__ == "__main__":
    sys.exit(main())
