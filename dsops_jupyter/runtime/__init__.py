"""Code that runs where a step runs: in the kernel, in the generated script, in a container.

Standard library only at import, and never an import of the rest of dsops_jupyter: the generated
script package ships this folder beside the script (as ``dsops_runtime/``) and `dsops run` loads it
into the kernel from its file path, so the script, `dsops run`, images and cluster exports share
one implementation of step artifacts and step cache entries.
"""
