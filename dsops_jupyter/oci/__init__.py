"""Reproducible images assembled in Python, without ``docker build`` (as ko and rules_oci do).

Why: a Dockerfile build stamps the wall clock into layers, history and config, and resolves
dependencies over the network, so two builds of one version never share a digest. Here every
byte is a function of the version commit, the lock, the wheels and the base. One concern a module:

- ``blob``: digests, the hashing stream, canonical JSON, blob descriptors;
- ``layer``: deterministic tar/gzip layers;
- ``source``: base-image readers (docker-archive, OCI layout, rootfs tarball, the engine);
- ``facts``: the base's Python and libc, read from its layers;
- ``archive``: the docker-archive + OCI layout writer;
- ``daemon``: ``docker save`` of a base, ``docker load`` of the image;
- ``policy``: which files go in which layer, and the image config;
- ``build``: the entry point and the `Assembler` builder.
"""

from dsops_jupyter.oci.build import Assembler, build_reproducible, read_base_file
from dsops_jupyter.oci.facts import inspect_base
from dsops_jupyter.oci.layer import LayerSpec
from dsops_jupyter.oci.source import BaseImage, base_archive, extend_base, read_base

__all__ = [
    "Assembler",
    "BaseImage",
    "LayerSpec",
    "base_archive",
    "build_reproducible",
    "extend_base",
    "inspect_base",
    "read_base",
    "read_base_file",
]
