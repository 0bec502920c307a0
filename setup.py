"""Extension list for ipsecfast's compiled core.

Every ``src/_NAME.pyx`` becomes ``ipsecfast._NAME``, linked against the system
OpenSSL 3 libcrypto. Set ``IPSECFAST_DEBUG=1`` for a bounds-checked, line-traced
build (``make debug``).
"""

import glob
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("IPSECFAST_DEBUG") == "1"

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "cdivision": not DEBUG,
    "initializedcheck": DEBUG,
    "embedsignature": True,
}
macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"), ("OPENSSL_API_COMPAT", "30000")]
if DEBUG:
    directives["linetrace"] = True
    macros.append(("CYTHON_TRACE_NOGIL", "1"))

extensions = []
for path in sorted(glob.glob("src/_*.pyx")):
    name = os.path.splitext(os.path.basename(path))[0]
    extensions.append(
        Extension(
            f"ipsecfast.{name}",
            [path],
            include_dirs=[numpy.get_include(), "src"],
            libraries=["crypto"],
            define_macros=macros,
            extra_compile_args=["-O3", "-g0" if not DEBUG else "-g", "-Wno-unused-function"],
        )
    )

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        include_path=["src"],
        annotate=False,
    ),
)
