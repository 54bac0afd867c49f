"""OSQ: the quantizer (KLT, balanced partitions, the scalar serving code with its bit
allocation, estimate and bounds, sign sketch; Lloyd cells for attributes)."""
