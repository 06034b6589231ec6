# safe_checkpoints is imported on its own (configs' custom_imports, the
# tools): it widens torch's checkpoint allowlist, which importing the package
# for its registrations does not.
from .check_finite_loss_hook import CheckFiniteLossHook

__all__ = ['CheckFiniteLossHook']
