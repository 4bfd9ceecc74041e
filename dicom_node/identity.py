"""Who made a DICOM object, as this node writes it: its outputs' manufacturer and the phantom generator's
algorithm name on ground truth. Light (no imports), so the generator, the outputs and the training data
readers share one spelling."""

MANUFACTURER = "dicom-node"  # General Equipment Manufacturer of every output object the node writes
GROUND_TRUTH_ALGORITHM = "dicom-node phantom generator"  # who draws the generator's SEG masks


def written_by_analysis(manufacturer: str, model_name: str) -> bool:
    """A SEG (or any object) this node's analysis wrote, from its Manufacturer and Manufacturer's Model
    Name: a result, never ground truth. Our manufacturer, any algorithm but the phantom generator."""
    return manufacturer == MANUFACTURER and model_name != GROUND_TRUTH_ALGORITHM
