"""Physical execution on Ray: device-group workers, the controller, the engine.

Only this package and :mod:`neuraflow.serve` import Ray. Import the Ray-free
parts directly (``neuraflow.runtime.local.run_local``, ``neuraflow.runtime.fused``).
"""
