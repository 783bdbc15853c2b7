"""What both training scripts share: options, the optimizer, the session around the iteration
(resume, logging, validation, snapshots, stopping), data-parallel helpers."""
