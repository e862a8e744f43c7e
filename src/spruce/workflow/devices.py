"""Where `spruce run` trains: one device, or all local ones through the backend's engine.

`training_devices(config)` sets the devices up (splitting the host CPU first when
asked, before the backend starts) and returns the run's training entry: engine,
replicas, devices, global and per-replica batch. It is part of the report and of the
stage keys: a result trained on 2 replicas is not a 1-device result.
"""

import dataclasses

from spruce.workflow.config import ConfigError
from spruce.workflow.progress import log as _log
from spruce.workflow.results import TrainingDevices


def training_devices(config, quiet):
    """Where both trainings run, as a `TrainingDevices` (also the report's entry).

    With `config.distribute`, all local devices through the backend's data-parallel
    engine, after splitting the host CPU into `config.cpu_devices` devices when asked.
    """
    single = TrainingDevices(engine="single device", replicas=1, global_batch=config.batch_size)
    if not config.distribute:
        return single
    import keras

    from spruce import distribute

    backend = keras.backend.backend()
    try:
        engine = distribute.check_engine(backend)
    except ValueError as e:
        raise ConfigError(f"--distribute: {str(e).rstrip('.')}, or drop --distribute.") from None
    if config.cpu_devices > 1:
        try:
            distribute.split_cpu(config.cpu_devices)
        except RuntimeError as e:
            raise ConfigError(f"--cpu-devices {config.cpu_devices}: {e}") from None
    devices = distribute.local_devices()
    replicas = len(devices)
    if replicas == 1:
        _log(f"distribute: one device ({devices[0]}), so training runs on it alone; on a CPU-only "
             "host, --cpu-devices N splits the CPU into N devices", quiet)
        return dataclasses.replace(single, devices=tuple(devices))
    if config.batch_size % replicas:
        fit = max(replicas, round(config.batch_size / replicas) * replicas)
        raise ConfigError(
            f"batch_size must be a multiple of the {replicas} replicas under --distribute (it is the "
            f"global batch, split evenly over the devices). Received: batch_size={config.batch_size}. "
            f"Use --batch-size {fit}.")
    _log(f"distribute: {engine} over {replicas} devices ({', '.join(devices)}), global batch "
         f"{config.batch_size} ({config.batch_size // replicas} per replica)", quiet)
    return TrainingDevices(engine=engine, backend=backend, replicas=replicas, devices=tuple(devices),
                           global_batch=config.batch_size, per_replica_batch=config.batch_size // replicas,
                           synchronized_batchnorm=backend == "tensorflow")


def fit_to_replicas(data, training, quiet):
    """JAX shards every batch evenly over the devices, the last, partial one too: keep a
    multiple of the replicas of the training and validation images (with a batch size that
    is one, every batch then splits evenly). TensorFlow splits uneven batches itself.

    Returns (data, training), `training` with the number of images dropped, if any."""
    replicas = training.replicas
    if replicas == 1 or training.backend != "jax":
        return data, training
    n_train, n_val = (len(data.x_train) // replicas * replicas, len(data.x_val) // replicas * replicas)
    dropped = len(data.x_train) - n_train + len(data.x_val) - n_val
    if not dropped:
        return data, training
    _log(f"distribute: dropping {dropped} image(s) so that {replicas} devices get equal shares", quiet)
    data = dataclasses.replace(data, x_train=data.x_train[:n_train], y_train=data.y_train[:n_train],
                               x_val=data.x_val[:n_val], y_val=data.y_val[:n_val])
    return data, dataclasses.replace(training, dropped_images=dropped)
