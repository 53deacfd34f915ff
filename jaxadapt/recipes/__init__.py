"""Recipes (a pipeline of jaxadapt stages in one run dir, resumable stage by stage) and sweeps over them."""
