"""Fine-tuning glue for Model Garden's own tasks: the transfer from an export (transfer) and the
segmentation task's registration (segmentation)."""
