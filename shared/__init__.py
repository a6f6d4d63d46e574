"""What every part shares; see the README's Layout.

OpenMP threads wait for work by spinning unless told otherwise. On a machine whose cores another job
shares, the spinning steals that job's time slices: the toy flow's 5-epoch fit took 43.5 s at the default
2 threads beside another training on this 2-core machine, 2.8 s at OMP_NUM_THREADS=1 and 3.5 s with
passive waiting. Every command imports this package before torch, so the default set here is in force
before the OpenMP runtime starts; an OMP_WAIT_POLICY already set by the user wins.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
