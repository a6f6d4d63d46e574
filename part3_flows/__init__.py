"""Part 3: normalizing flows. layers.py holds the invertible layers, networks.py the flows built from
them (plain networks), dequantization.py the image flow's dequantizers (uniform and variational),
modules.py the LightningModules, distributions.py the toy task's densities and data, plots.py its
figures, train.py the command."""
from shared.moved import register_moved

register_moved({"part3_flows.model": "part3_flows.networks"})
