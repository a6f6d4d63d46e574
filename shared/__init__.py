"""What every part shares; see the README's Layout.

OpenMP threads that wait for work spin before they sleep. On a machine whose cores another job shares,
the spinning steals that job's time slices. Measured on this 2-core machine, 2 epochs of the default VAE
(2 threads): 6.0 s alone and 155 s beside another training with libgomp's default spin; with
GOMP_SPINCOUNT=2000, 6.3 s alone and 10.4 s beside it (passive waiting: 10.1 s alone, 9.3 s beside).
Every command imports this package before torch, so the default set here is in force before the
OpenMP runtime starts; a value the user set wins.
"""
import os

os.environ.setdefault("GOMP_SPINCOUNT", "2000")
