"""Shipping what was measured: bundles (`bundle`, read on the device by `effkit.edge`) and TFLite Micro sources
(`micro`)."""
