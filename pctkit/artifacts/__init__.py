"""What runs leave behind: checkpoints, metrics, pictures, exports."""
