#!/usr/bin/env python3
"""Drives Berth's ECR API with boto3 and validates every response against botocore's model.

    ecr_boto3.py --endpoint http://127.0.0.1:PORT --registry 127.0.0.1:PORT --repo NAME

Credentials come from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY). Each raw
response body (captured from botocore's after-call event, before parsing) is checked against
the operation's output shape: required members present, types right (AWS JSON 1.1: timestamps
are epoch seconds), enum values known, and no members the model does not define. Errors must
carry a `__type` the operation's model lists. Blobs for PutImage are uploaded over the
registry's HTTP API (stdlib urllib). Prints a JSON summary; exits 1 on the first failure.
"""

import argparse
import base64
import hashlib
import json
import os
import re
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from botovalidate import VALIDATED, Client, check, validate  # noqa: E402


class Ecr(Client):
    """A boto3 ECR client whose every response is validated against the service model."""

    def __init__(self, endpoint, region):
        super().__init__("ecr", endpoint, region)


# ---- registry blobs over HTTP ---------------------------------------------------------------


def upload_blob(registry, repo, data, user, password):
    auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    req = urllib.request.Request(f"http://{registry}/v2/{repo}/blobs/uploads/", method="POST", data=b"")
    req.add_header("Authorization", auth)
    with urllib.request.urlopen(req) as r:
        check(r.status == 202, f"upload POST {r.status}")
        loc = r.headers["Location"]
    if loc.startswith("/"):
        loc = f"http://{registry}{loc}"
    sep = "&" if "?" in loc else "?"
    req = urllib.request.Request(f"{loc}{sep}digest={digest}", method="PUT", data=data)
    req.add_header("Authorization", auth)
    req.add_header("Content-Type", "application/octet-stream")
    with urllib.request.urlopen(req) as r:
        check(r.status == 201, f"upload PUT {r.status}")
    return {"digest": digest, "size": len(data)}


def make_manifest(registry, repo, user, password):
    layer = upload_blob(registry, repo, os.urandom(4096), user, password)
    config = json.dumps({"architecture": "amd64", "os": "linux", "nonce": os.urandom(8).hex()}).encode()
    cfg = upload_blob(registry, repo, config, user, password)
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": dict(cfg, mediaType="application/vnd.oci.image.config.v1+json"),
            "layers": [dict(layer, mediaType="application/vnd.oci.image.layer.v1.tar+gzip")],
        },
        separators=(",", ":"),
    )


def self_test(model):
    """The validator must reject what botocore's model does not allow."""
    shape = model.operation_model("CreateRepository").output_shape
    good = {"repository": {"repositoryName": "app", "createdAt": 1700000000.5, "imageTagMutability": "MUTABLE"}}
    bad = [
        {"repository": {"repositoryName": "a", "bogus": 1}},
        {"repository": {"repositoryName": 5}},
        {"repository": {"createdAt": "2024-01-01T00:00:00Z"}},
        {"repository": {"createdAt": 1700000000000}},
        {"repository": {"imageTagMutability": "SOMETIMES"}},
        {"repository": None},
    ]
    errors = []
    validate(shape, good, "good", errors)
    check(not errors, f"validator self-test: {errors}")
    for b in bad:
        errors = []
        validate(shape, b, "bad", errors)
        check(errors, f"validator self-test accepted {b}")
    shape = model.operation_model("GetAuthorizationToken").output_shape
    errors = []
    validate(shape, {"authorizationData": [{"expiresAt": True}]}, "bad", errors)
    check(errors, "validator self-test accepted a boolean timestamp")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--registry", required=True)
    p.add_argument("--repo", required=True)
    a = p.parse_args()
    user, password = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
    region = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    ecr = Ecr(a.endpoint, region)
    self_test(ecr.model)
    repo = a.repo

    # Repositories.
    _, doc = ecr.call(
        "CreateRepository",
        repositoryName=repo,
        imageTagMutability="IMMUTABLE",
        tags=[{"Key": "team", "Value": "berth"}],
    )
    r = doc["repository"]
    check(r["repositoryName"] == repo, "CreateRepository name")
    check(r["imageTagMutability"] == "IMMUTABLE", "CreateRepository mutability")
    check(r["repositoryUri"] == f"{a.registry}/{repo}", f"repositoryUri {r['repositoryUri']}")
    check(re.fullmatch(rf"arn:aws:ecr:{region}:\d{{12}}:repository/{re.escape(repo)}", r["repositoryArn"]), r["repositoryArn"])
    arn = r["repositoryArn"]
    ecr.error("CreateRepository", "RepositoryAlreadyExistsException", repositoryName=repo)
    ecr.error("CreateRepository", "InvalidParameterException", repositoryName="Bad_Name_UPPER")
    _, doc = ecr.call("DescribeRepositories", repositoryNames=[repo])
    check([x["repositoryArn"] for x in doc["repositories"]] == [arn], "DescribeRepositories by name")
    _, doc = ecr.call("DescribeRepositories")
    check(arn in [x["repositoryArn"] for x in doc["repositories"]], "DescribeRepositories all")
    ecr.error("DescribeRepositories", "RepositoryNotFoundException", repositoryNames=[repo + "-missing"])

    # Images: PutImage with blobs uploaded over the registry API.
    manifest = make_manifest(a.registry, repo, user, password)
    digest = "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()
    _, doc = ecr.call("PutImage", repositoryName=repo, imageManifest=manifest, imageTag="v1")
    check(doc["image"]["imageId"]["imageDigest"] == digest, "PutImage digest")
    check(doc["image"]["imageManifest"] == manifest, "PutImage manifest echoed")
    ecr.error("PutImage", "ImageAlreadyExistsException", repositoryName=repo, imageManifest=manifest, imageTag="v1")
    other = make_manifest(a.registry, repo, user, password)
    ecr.error("PutImage", "ImageTagAlreadyExistsException", repositoryName=repo, imageManifest=other, imageTag="v1")
    missing_layers = json.loads(other)
    missing_layers["layers"][0]["digest"] = "sha256:" + "1" * 64
    ecr.error("PutImage", "LayersNotFoundException", repositoryName=repo, imageManifest=json.dumps(missing_layers), imageTag="x")

    _, doc = ecr.call("ListImages", repositoryName=repo)
    check(doc["imageIds"] == [{"imageDigest": digest, "imageTag": "v1"}], f"ListImages {doc}")
    _, doc = ecr.call("DescribeImages", repositoryName=repo)
    d = doc["imageDetails"]
    check(len(d) == 1 and d[0]["imageDigest"] == digest and d[0]["imageTags"] == ["v1"], f"DescribeImages {d}")
    check(d[0]["imageSizeInBytes"] > 4096, "imageSizeInBytes")
    check(abs(d[0]["imagePushedAt"] - time.time()) < 300, "imagePushedAt")
    check(d[0].get("imageManifestMediaType") == "application/vnd.oci.image.manifest.v1+json", "imageManifestMediaType")
    ecr.error("DescribeImages", "ImageNotFoundException", repositoryName=repo, imageIds=[{"imageTag": "nope"}])
    _, doc = ecr.call("BatchGetImage", repositoryName=repo, imageIds=[{"imageTag": "v1"}, {"imageTag": "nope"}])
    check(len(doc["images"]) == 1 and doc["images"][0]["imageManifest"] == manifest, "BatchGetImage manifest")
    check([f["failureCode"] for f in doc["failures"]] == ["ImageNotFound"], f"BatchGetImage failures {doc['failures']}")

    # Mutability, tags on the repository.
    _, doc = ecr.call("PutImageTagMutability", repositoryName=repo, imageTagMutability="MUTABLE")
    check(doc["imageTagMutability"] == "MUTABLE", "PutImageTagMutability")
    _, doc = ecr.call("PutImage", repositoryName=repo, imageManifest=other, imageTag="v1")
    digest2 = doc["image"]["imageId"]["imageDigest"]
    ecr.call("TagResource", resourceArn=arn, tags=[{"Key": "env", "Value": "test"}])
    _, doc = ecr.call("ListTagsForResource", resourceArn=arn)
    check(sorted((t["Key"], t["Value"]) for t in doc["tags"]) == [("env", "test"), ("team", "berth")], f"tags {doc}")
    ecr.call("UntagResource", resourceArn=arn, tagKeys=["team"])
    _, doc = ecr.call("ListTagsForResource", resourceArn=arn)
    check(doc["tags"] == [{"Key": "env", "Value": "test"}], f"tags after untag {doc}")

    # Lifecycle policy.
    policy = json.dumps(
        {
            "rules": [
                {
                    "rulePriority": 1,
                    "description": "only the newest",
                    "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1},
                    "action": {"type": "expire"},
                }
            ]
        }
    )
    ecr.error("GetLifecyclePolicy", "LifecyclePolicyNotFoundException", repositoryName=repo)
    _, doc = ecr.call("PutLifecyclePolicy", repositoryName=repo, lifecyclePolicyText=policy)
    check(json.loads(doc["lifecyclePolicyText"]) == json.loads(policy), "PutLifecyclePolicy text")
    _, doc = ecr.call("GetLifecyclePolicy", repositoryName=repo)
    check(json.loads(doc["lifecyclePolicyText"]) == json.loads(policy), "GetLifecyclePolicy text")
    ecr.call("StartLifecyclePolicyPreview", repositoryName=repo)
    deadline = time.time() + 30
    while True:
        _, doc = ecr.call("GetLifecyclePolicyPreview", repositoryName=repo)
        if doc["status"] != "IN_PROGRESS" or time.time() > deadline:
            break
        time.sleep(0.2)
    check(doc["status"] == "COMPLETE", f"preview status {doc['status']}")
    check([x["imageDigest"] for x in doc["previewResults"]] == [digest], f"preview {doc['previewResults']}")
    check(doc["summary"]["expiringImageTotalCount"] == 1, "preview summary")
    ecr.call("DeleteLifecyclePolicy", repositoryName=repo)
    ecr.error("GetLifecyclePolicy", "LifecyclePolicyNotFoundException", repositoryName=repo)

    # Authorization token.
    _, doc = ecr.call("GetAuthorizationToken")
    ad = doc["authorizationData"][0]
    user_pass = base64.b64decode(ad["authorizationToken"]).decode()
    check(user_pass.startswith("AWS:"), "authorizationToken is AWS:<password>")
    check(ad["expiresAt"] > time.time() + 3600, "token expiry")
    check(ad["proxyEndpoint"] == f"http://{a.registry}", f"proxyEndpoint {ad['proxyEndpoint']}")

    # Deletion.
    _, doc = ecr.call("BatchDeleteImage", repositoryName=repo, imageIds=[{"imageDigest": digest}, {"imageTag": "nope"}])
    check([i["imageDigest"] for i in doc["imageIds"]] == [digest], f"BatchDeleteImage {doc}")
    check([f["failureCode"] for f in doc["failures"]] == ["ImageNotFound"], f"BatchDeleteImage failures {doc}")
    ecr.error("DeleteRepository", "RepositoryNotEmptyException", repositoryName=repo)
    _, doc = ecr.call("DeleteRepository", repositoryName=repo, force=True)
    check(doc["repository"]["repositoryArn"] == arn, "DeleteRepository returns the repository")
    ecr.error("DescribeImages", "RepositoryNotFoundException", repositoryName=repo)
    ecr.error("DeleteRepository", "RepositoryNotFoundException", repositoryName=repo)

    print(json.dumps({"validated": VALIDATED, "digest2": digest2}))


if __name__ == "__main__":
    main()
