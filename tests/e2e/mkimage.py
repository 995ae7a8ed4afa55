#!/usr/bin/env python3
"""Writes a test image as an OCI image layout, from random data (nothing is pulled).

    mkimage.py DIR --tag TAG [--layers N] [--layer-size BYTES] [--platform OS/ARCH ...]
               [--busybox]

Each layer is a tar holding one file of random bytes, gzip-compressed at level 1. With
--busybox a first layer holds /bin/busybox (Debian's busybox-static) and applet symlinks, and
the config's Cmd is /bin/sh, so the image runs. With one
--platform (default linux/amd64) DIR holds an image manifest; with several, an image index
pointing at one manifest per platform. DIR may already be a layout: the new tag is added.
Prints a JSON summary: {"digest", "mediaType", "images": [{"platform", "digest", "config",
"layers"}]}.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import tarfile

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def write_blob(root, data):
    hexd = hashlib.sha256(data).hexdigest()
    d = os.path.join(root, "blobs", "sha256")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hexd), "wb") as f:
        f.write(data)
    return "sha256:" + hexd


def make_layer(size, name):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = size
        info.mode = 0o644
        info.mtime = 0
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    tar_bytes = raw.getvalue()
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", compresslevel=1, mtime=0) as g:
        g.write(tar_bytes)
    return gz.getvalue(), "sha256:" + hashlib.sha256(tar_bytes).hexdigest()


BUSYBOX_APPLETS = ["sh", "echo", "true", "false", "cat", "ls", "sleep", "env", "id", "uname"]


def make_busybox_layer():
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ["bin", "tmp"]:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        with open("/bin/busybox", "rb") as f:
            data = f.read()
        info = tarfile.TarInfo("bin/busybox")
        info.size = len(data)
        info.mode = 0o755
        tar.addfile(info, io.BytesIO(data))
        for a in BUSYBOX_APPLETS:
            info = tarfile.TarInfo("bin/" + a)
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            tar.addfile(info)
    tar_bytes = raw.getvalue()
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", compresslevel=1, mtime=0) as g:
        g.write(tar_bytes)
    return gz.getvalue(), "sha256:" + hashlib.sha256(tar_bytes).hexdigest()


def make_image(root, nlayers, size, os_name, arch, busybox=False):
    layers, diff_ids = [], []
    if busybox:
        gz, diff_id = make_busybox_layer()
        layers.append({"mediaType": OCI_LAYER, "digest": write_blob(root, gz), "size": len(gz)})
        diff_ids.append(diff_id)
    for i in range(nlayers):
        gz, diff_id = make_layer(size, f"data/layer-{i}.bin")
        layers.append({"mediaType": OCI_LAYER, "digest": write_blob(root, gz), "size": len(gz)})
        diff_ids.append(diff_id)
    config = json.dumps(
        {
            "architecture": arch,
            "os": os_name,
            "config": dict(
                {"Env": ["PATH=/bin"], "Labels": {"berth.test.nonce": os.urandom(8).hex()}},
                **({"Cmd": ["/bin/sh"]} if busybox else {}),
            ),
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": "mkimage.py"} for _ in range(len(diff_ids))],
        },
        separators=(",", ":"),
    ).encode()
    config_desc = {"mediaType": OCI_CONFIG, "digest": write_blob(root, config), "size": len(config)}
    manifest = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_desc, "layers": layers},
        separators=(",", ":"),
    ).encode()
    return {
        "platform": f"{os_name}/{arch}",
        "digest": write_blob(root, manifest),
        "size": len(manifest),
        "config": config_desc["digest"],
        "layers": [l["digest"] for l in layers],
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--tag", required=True)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--layer-size", type=int, default=1024)
    p.add_argument("--platform", action="append")
    p.add_argument("--busybox", action="store_true")
    a = p.parse_args()
    platforms = a.platform or ["linux/amd64"]

    os.makedirs(a.dir, exist_ok=True)
    with open(os.path.join(a.dir, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)

    images = []
    for plat in platforms:
        os_name, arch = plat.split("/", 1)
        images.append(make_image(a.dir, a.layers, a.layer_size, os_name, arch, a.busybox))

    if len(images) == 1:
        top = {"mediaType": OCI_MANIFEST, "digest": images[0]["digest"], "size": images[0]["size"]}
    else:
        index = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [
                    {
                        "mediaType": OCI_MANIFEST,
                        "digest": im["digest"],
                        "size": im["size"],
                        "platform": {"os": im["platform"].split("/")[0], "architecture": im["platform"].split("/")[1]},
                    }
                    for im in images
                ],
            },
            separators=(",", ":"),
        ).encode()
        top = {"mediaType": OCI_INDEX, "digest": write_blob(a.dir, index), "size": len(index)}

    index_path = os.path.join(a.dir, "index.json")
    outer = {"schemaVersion": 2, "manifests": []}
    if os.path.exists(index_path):
        with open(index_path) as f:
            outer = json.load(f)
    outer["manifests"] = [
        m
        for m in outer["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != a.tag
    ]
    outer["manifests"].append(dict(top, annotations={"org.opencontainers.image.ref.name": a.tag}))
    with open(index_path, "w") as f:
        json.dump(outer, f)

    print(json.dumps({"digest": top["digest"], "mediaType": top["mediaType"], "images": images}))


if __name__ == "__main__":
    main()
