"""`make bench`: squash against exact search and FAISS, one core, plus scale and cost sections.

Importing the package pins BLAS/OpenMP to one thread before numpy loads (every figure in the
report is single-core; callers may still override the variables in the environment).
"""

import os

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
THREADS_FROM_ENV = {var: os.environ.get(var) for var in THREAD_VARS}
for _var in THREAD_VARS:
    os.environ.setdefault(_var, "1")
