"""Packaged pyradiomics settings files of the four studies (see ``vcfnb.features.packaged_settings``)."""
