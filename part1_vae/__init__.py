"""Part 1: the VAE and the Bernoulli mixture. networks.py holds the plain networks, modules.py the
LightningModules, train.py and train_mixture.py the commands."""
from shared.moved import register_moved

register_moved({"part1_vae.models": "part1_vae.networks", "part1_vae.vae": "part1_vae.modules",
                "part1_vae.utils": "shared.densities"})
