"""The mask precompute as an Apache Beam pipeline: DirectRunner, Dataflow, Flink or Spark.

FH masks for ImageNet take days on one machine (DetCon §3.1 computes them once, offline). Beam
spreads the shards of a `precompute.Job` over a runner's workers: each unfinished shard is one
element, a Reshuffle spreads them, and each worker writes its shard with the same atomic
`Job.write_shard` as the single-machine path. When the pipeline has finished, the launcher writes
the manifest, as the single-machine path does. The output is therefore the single-machine output, byte for byte, and the resume
semantics are the same: a shard that exists is finished, a retried or killed worker leaves only
temporary files that are never listed, and a rerun writes only the missing shards.

The unit of parallelism is the shard: give at least a few shards per worker core (ImageNet:
`--num_shards=1024`). Pipeline options are Beam's own, given as TFDS's build command takes them:
'runner=DataflowRunner,project=P,region=R,temp_location=gs://...'.

Needs the `beam` extra: `pip install -e .[beam]`.
"""

from typing import Any, Dict, List, Optional

from absl import logging
import tensorflow as tf

from tf_detcon.data.offline import precompute

_COUNTER_NAMESPACE = 'tf_detcon.make_masks'


def pipeline_args(options: str) -> List[str]:
  """'runner=DirectRunner,direct_num_workers=2' -> ['--runner=DirectRunner', ...]."""
  args = []
  for item in filter(None, (part.strip() for part in options.split(','))):
    name, sep, _ = item.partition('=')
    if not sep or not name:
      raise ValueError(f"--beam_pipeline_options item {item!r} is not 'name=value'")
    args.append('--' + item)
  return args


def _import_beam():
  try:
    import apache_beam as beam  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ValueError("--runner=beam needs Apache Beam: pip install -e '.[beam]'") from e
  return beam


def error_path(shard_path: str) -> str:
  return shard_path + '.error'


class _WriteShard:
  """A DoFn body: writes one shard of the job and counts what it wrote.

  A bad example (with on_bad_example='error') is not raised: a runner would retry the shard and
  fail the same way, and wrap the message in its own traceback. The shard stays unwritten and
  its message goes to `<shard>.error`, which the launcher reports after the pipeline.
  """

  def __init__(self, job: precompute.Job):
    self.job = job

  def __call__(self, index: int) -> None:
    beam = _import_beam()
    path = error_path(self.job.shard_path(index))
    try:
      stats = self.job.write_shard(index)
    except precompute.BadExampleError as e:
      with tf.io.gfile.GFile(path, 'w') as f:
        f.write(str(e))
      beam.metrics.Metrics.counter(_COUNTER_NAMESPACE, 'failed_shards').inc()
      return
    if tf.io.gfile.exists(path):
      tf.io.gfile.remove(path)
    beam.metrics.Metrics.counter(_COUNTER_NAMESPACE, 'shards').inc()
    for name, value in stats.items():
      beam.metrics.Metrics.counter(_COUNTER_NAMESPACE, name).inc(value)


def _raise_shard_errors(job: precompute.Job, indices: List[int]) -> None:
  """Raises the first bad-example message of the given shards, if any shard has one."""
  messages = []
  for index in indices:
    path = error_path(job.shard_path(index))
    if tf.io.gfile.exists(path):
      with tf.io.gfile.GFile(path) as f:
        messages.append(f.read())
  if messages:
    more = f' (and bad examples in {len(messages) - 1} more shards)' if len(messages) > 1 else ''
    raise ValueError(messages[0] + more)


def run(job: precompute.Job, options: str = '') -> Optional[Dict[str, Any]]:
  """Writes the job's unfinished shards on a Beam runner; returns the manifest.

  Args:
    job: the precompute job. `worker_index`/`num_workers`/`num_processes` must stay at their
      single-worker defaults: the runner decides where shards are written.
    options: Beam pipeline options, 'name=value' items separated by commas; '' is the
      DirectRunner in this process.

  Returns:
    The manifest, or None if the runner returned without every shard finished.
  """
  beam = _import_beam()
  from apache_beam.options import pipeline_options  # pylint: disable=g-import-not-at-top
  if job.num_workers != 1 or job.worker_index != 0 or job.num_processes != 1:
    raise ValueError('--runner=beam spreads shards itself: leave --num_workers, --worker_index '
                     'and --num_processes unset (use direct_num_workers or the runner\'s '
                     'worker options in --beam_pipeline_options)')
  opts = pipeline_options.PipelineOptions(pipeline_args(options))
  pending = job.prepare()
  if pending:
    with beam.Pipeline(options=opts) as pipeline:
      _ = (pipeline
           | 'Pending shards' >> beam.Create(pending)
           | 'Spread' >> beam.Reshuffle()
           | 'Write shard' >> beam.Map(_WriteShard(job)))
    _raise_shard_errors(job, pending)
    logging.info('beam: wrote %d shards', len(pending))
  return job.finish()
