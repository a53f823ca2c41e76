"""flactl.ops: Triton kernels (GPU) and vectorised torch paths (CPU) for every op family.

Public signatures follow fla's (see docs/CONTRIBUTING.md): ``o, final_state = chunk_<family>(q, k, v, ...)``.
Importing this package registers each family's numeric probe (see ``flactl.ops.probes``).
"""
from .utils import chunk_local_cumsum, force_backend  # noqa: F401
