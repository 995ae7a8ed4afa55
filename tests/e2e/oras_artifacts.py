#!/usr/bin/env python3
"""Pushes and pulls OCI artifacts with the oras Python SDK (oras-py), unmodified.

    oras_artifacts.py --registry HOST:PORT --user U --password P --repo REPO --workdir DIR
                      [--push-auth basic|token] [--pull-auth token|basic]

1. pushes artifact A (two files, a config with its own media type, an artifactType and
   manifest annotations) as REPO:v1, reads its manifest back, pulls it and compares files;
2. pushes B (artifactType set) and C (no artifactType: the config media type stands in) with
   `subject` = A;
3. prints JSON with the digests, for the caller to query the referrers API.

Pushes use oras-py's "basic" auth backend by default: its "token" backend caches the first
bearer token it gets (pull scope, from the HEAD that starts a push) and retries the upload
POST with that same token after the 401 insufficient_scope challenge, so it cannot push to a
registry whose tokens carry only the requested scope (distribution, ACR, Berth). Pulls use the
token backend, which exercises Berth's Docker token endpoint.

oras-py's push() has no artifactType parameter, so a subclass adds it to the manifest in
upload_manifest(), its documented extension point; everything on the wire is oras-py's.
"""

import argparse
import hashlib
import json
import os
import sys

import oras.client
import oras.oci
import oras.provider

ARTIFACT_TYPE = "application/vnd.berth.test.artifact.v1"
SBOM_TYPE = "application/vnd.berth.test.sbom.v1"
SIG_CONFIG_TYPE = "application/vnd.berth.test.signature.config.v1+json"
CONFIG_TYPE = "application/vnd.berth.test.config.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class Registry(oras.provider.Registry):
    artifact_type = None

    def upload_manifest(self, manifest, container):
        if self.artifact_type:
            manifest["artifactType"] = self.artifact_type
        return super().upload_manifest(manifest, container)


def check(cond, what):
    if not cond:
        print(f"oras_artifacts.py: FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def raw_manifest(client, target):
    container = client.get_container(target)
    client.auth.load_configs(container)
    url = f"{client.prefix}://{container.manifest_url()}"
    r = client.do_request(url, "GET", headers={"Accept": OCI_MANIFEST})
    check(r.status_code == 200, f"GET {url}: {r.status_code} {r.text}")
    return r.content, r.headers


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--registry", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--repo", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--push-auth", default="basic")
    p.add_argument("--pull-auth", default="token")
    a = p.parse_args()

    src = os.path.join(a.workdir, "src")
    os.makedirs(src, exist_ok=True)
    os.chdir(src)  # oras-py wants pushed files relative to the working directory
    files = {
        "hello.txt": ("Hello from oras-py " + os.urandom(8).hex() + "\n").encode(),
        "data.bin": os.urandom(300 * 1024),
    }
    for name, data in files.items():
        with open(name, "wb") as f:
            f.write(data)
    with open("config.json", "w") as f:
        json.dump({"tool": "oras-py", "nonce": os.urandom(4).hex()}, f)

    client = Registry(hostname=a.registry, insecure=True, auth_backend=a.push_auth)
    client.auth.set_basic_auth(a.user, a.password)
    puller = Registry(hostname=a.registry, insecure=True, auth_backend=a.pull_auth)
    puller.auth.set_basic_auth(a.user, a.password)
    target = f"{a.registry}/{a.repo}"

    # 1. The artifact.
    client.artifact_type = ARTIFACT_TYPE
    annotations = {"org.opencontainers.image.description": "berth e2e artifact", "com.example.kind": "test"}
    resp = client.push(
        target=f"{target}:v1",
        files=["hello.txt:text/plain", "data.bin:application/octet-stream"],
        manifest_config=f"config.json:{CONFIG_TYPE}",
        manifest_annotations=annotations,
        quiet=True,
    )
    check(resp.status_code == 201, f"push A: {resp.status_code} {resp.text}")
    digest_a = resp.headers.get("Docker-Content-Digest")
    check(digest_a and digest_a.startswith("sha256:"), f"push A: Docker-Content-Digest {digest_a!r}")

    body, headers = raw_manifest(puller, f"{target}:v1")
    check("sha256:" + hashlib.sha256(body).hexdigest() == digest_a, "manifest A digest")
    m = json.loads(body)
    check(m.get("artifactType") == ARTIFACT_TYPE, f"artifactType kept: {m.get('artifactType')}")
    for k, v in annotations.items():
        check(m.get("annotations", {}).get(k) == v, f"annotation {k} kept")
    check(m["config"]["mediaType"] == CONFIG_TYPE, "config media type kept")
    check([l["mediaType"] for l in m["layers"]] == ["text/plain", "application/octet-stream"], "layer media types")
    check(puller.get_tags(target) == ["v1"], f"tags: {puller.get_tags(target)}")

    out = os.path.join(a.workdir, "pulled")
    pulled = puller.pull(target=f"{target}:v1", outdir=out)
    check(sorted(os.path.basename(f) for f in pulled) == sorted(files), f"pulled files {pulled}")
    for name, data in files.items():
        with open(os.path.join(out, name), "rb") as f:
            check(f.read() == data, f"pulled {name} differs")

    # 2. Two referrers of A.
    subject = oras.oci.Subject(mediaType=OCI_MANIFEST, digest=digest_a, size=len(body))
    with open("sbom.json", "w") as f:
        json.dump({"packages": ["busybox"], "nonce": os.urandom(4).hex()}, f)
    client.artifact_type = SBOM_TYPE
    resp = client.push(
        target=f"{target}:sbom",
        files=["sbom.json:application/json"],
        manifest_annotations={"com.example.referrer": "sbom"},
        subject=subject,
        quiet=True,
    )
    check(resp.status_code == 201, f"push B: {resp.status_code} {resp.text}")
    check(
        resp.headers.get("OCI-Subject") in (None, digest_a),
        f"OCI-Subject header {resp.headers.get('OCI-Subject')}",
    )
    digest_b = resp.headers.get("Docker-Content-Digest")

    with open("sig.json", "w") as f:
        json.dump({"sig": os.urandom(16).hex()}, f)
    with open("sigconfig.json", "w") as f:
        json.dump({"signer": "e2e"}, f)
    client.artifact_type = None
    resp = client.push(
        target=f"{target}:sig",
        files=["sig.json:application/vnd.berth.test.signature.v1"],
        manifest_config=f"sigconfig.json:{SIG_CONFIG_TYPE}",
        subject=subject,
        quiet=True,
    )
    check(resp.status_code == 201, f"push C: {resp.status_code} {resp.text}")
    digest_c = resp.headers.get("Docker-Content-Digest")

    # The referrer pulls back too.
    out_b = os.path.join(a.workdir, "pulled-sbom")
    puller.pull(target=f"{target}:sbom", outdir=out_b)
    with open(os.path.join(out_b, "sbom.json"), "rb") as f, open("sbom.json", "rb") as g:
        check(f.read() == g.read(), "pulled sbom.json differs")

    # 3. A bigger file through oras-py's chunked upload (POST, PATCH per chunk, PUT).
    with open("big.bin", "wb") as f:
        big = os.urandom(3 * 1024 * 1024 + 12345)
        f.write(big)
    client.artifact_type = None
    resp = client.push(target=f"{target}:chunked", files=["big.bin"], do_chunked=True, chunk_size=1 << 20, quiet=True)
    check(resp.status_code == 201, f"chunked push: {resp.status_code} {resp.text}")
    out_c = os.path.join(a.workdir, "pulled-chunked")
    puller.pull(target=f"{target}:chunked", outdir=out_c)
    with open(os.path.join(out_c, "big.bin"), "rb") as f:
        check(f.read() == big, "pulled big.bin (chunked upload) differs")

    print(
        json.dumps(
            {
                "subject": digest_a,
                "subject_size": len(body),
                "sbom": digest_b,
                "sig": digest_c,
                "artifact_type": ARTIFACT_TYPE,
                "sbom_type": SBOM_TYPE,
                "sig_type": SIG_CONFIG_TYPE,
            }
        )
    )


if __name__ == "__main__":
    main()
