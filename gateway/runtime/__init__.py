"""The running gateway for one app's lifetime, and what changes it: reloads, local model management, admin jobs."""
