"""dalaug: DALI loaders, GPU batch mixing and a clean refinement phase for image classification."""
