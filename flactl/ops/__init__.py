"""flactl.ops: Triton kernels (GPU) and vectorised torch paths (CPU) for every op family.

Public signatures follow fla's (see docs/CONTRIBUTING.md): ``o, final_state = chunk_<family>(q, k, v, ...)``.
Importing this package registers each family's numeric probe (see ``flactl.ops.probes``).
"""
from .utils import chunk_local_cumsum, force_backend  # noqa: F401
from .hgrn import chunk_hgrn, fused_recurrent_hgrn  # noqa: F401
from .common import recurrent_probes  # noqa: F401,E402  (registers the fused_recurrent_* probes)
from .simple_gla import chunk_simple_gla, parallel_simple_gla  # noqa: F401,E402
from .retention import chunk_retention, parallel_retention  # noqa: F401,E402
from .linear_attn import chunk_linear_attn  # noqa: F401,E402
from .gla import chunk_gla  # noqa: F401,E402
from .delta_rule import chunk_delta_rule, fused_recurrent_delta_rule  # noqa: F401,E402
from .gated_delta_rule import chunk_gated_delta_rule, fused_recurrent_gated_delta_rule  # noqa: F401,E402
from .gated_delta_product import chunk_gated_delta_product  # noqa: F401,E402
from .comba import chunk_comba, fused_recurrent_comba  # noqa: F401,E402
from .rwkv6 import chunk_rwkv6, fused_recurrent_rwkv6  # noqa: F401,E402
