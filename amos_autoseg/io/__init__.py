"""Reading and writing images and datasets: SimpleITK IO with full geometry, the two dataset layouts."""
