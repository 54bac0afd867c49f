"""OSQ: the quantizer (KLT, balanced partitions, bit allocation, Lloyd cells, packing, sketch, bounds)."""
