"""Part 2: the GAN and the adversarial autoencoder. networks.py holds the plain networks, modules.py the
LightningModules, priors.py the AAE's priors and the MMD, plots.py its latent map, train.py and
train_aae.py the commands."""
from shared.moved import register_moved

register_moved({"part2_gan.models": "part2_gan.networks", "part2_gan.gan": "part2_gan.modules"})
