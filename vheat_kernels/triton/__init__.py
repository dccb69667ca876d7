"""Fused Triton kernels of the Heat Conduction Operator (the 'triton' backend).

Kept import-light on purpose: nothing here imports triton. ``hco`` (launchers, the
``vheat::hco_triton`` op and its autograd) is imported lazily by ``vheat_kernels.backends``;
``kernels`` holds the ``@triton.jit`` code and ``configs`` the block configurations and
on-chip limits shared by the launchers and the ahead-of-time compile check.
"""
