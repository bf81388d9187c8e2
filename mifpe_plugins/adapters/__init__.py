"""Adapters to host libraries (torchattacks, Foolbox, ART, AutoAttack); each imports its host lazily."""
