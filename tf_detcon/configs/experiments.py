"""The registered pretraining experiments: one decorated factory per run, named as the experiment.

`--experiment=<name>` takes these names; `grep -n "def <name>" tf_detcon/configs/experiments.py`
finds each one. The settings come from the papers (`docs/paper_settings.md` quotes and cites each,
and a test holds every experiment to it). Three helpers derive the variants: `as_baseline` (the
method DetCon builds on: SimCLR or BYOL), `decon` (DeCon around a method) and `tiny` (the CPU
miniature of any experiment).
"""

from typing import Optional, Sequence

from official.core import config_definitions as cfg
from official.core import exp_factory
from official.vision.configs import backbones

from official.modeling import optimization as mg_optimization
from tf_detcon.configs import data as data_config
from tf_detcon.configs import methods
from tf_detcon.configs import optimization
from tf_detcon.configs import pretrain
from tf_detcon.configs.pretrain import PretrainExperiment, PretrainTask

GLOBAL_MASK = data_config.MaskConfig(type='grid', grid=data_config.GridMasks(grid_size=1))
DETCON_BATCH = 4096  # DetCon A.3
DETCO_BATCH = 256  # DetCo §3.3
DETCO_LEARNING_RATE = 0.06  # DetCo §6.5: "The learning rate for pre-training is 0.06"
MOCOV2_LEARNING_RATE = 0.03  # MoCo v2 (Chen et al. 2020)


def experiment(task: PretrainTask, train_steps: int,
               optimizer: mg_optimization.OptimizationConfig) -> PretrainExperiment:
  """A TPU run: bfloat16, checkpoints every 5000 steps, 1000 steps per loop."""
  return PretrainExperiment(
      task=task,
      trainer=cfg.TrainerConfig(train_steps=train_steps, steps_per_loop=1000,
                                checkpoint_interval=5000, summary_interval=1000, max_to_keep=3,
                                optimizer_config=optimizer),
      runtime=cfg.RuntimeConfig(distribution_strategy='tpu', mixed_precision_dtype='bfloat16'))


# ----------------------------------------------------------------------------- DetCon family

def detcon_experiment(variant: str, epochs: int, dataset: str = 'imagenet',
                      masks: Optional[data_config.MaskConfig] = None) -> PretrainExperiment:
  """DetCon_B / DetCon_S with the paper's settings (DetCon §3.1, A.1–A.3): the views, heads and
  optimisation of BYOL (b) or SimCLR (s), FH masks, LARS at batch 4096."""
  views = data_config.byol_views() if variant == 'b' else data_config.simclr_views()
  data = data_config.DataConfig(global_batch_size=DETCON_BATCH,
                                masks=masks or data_config.MaskConfig(), **views)
  if variant == 'b':
    # DetCon A.2/A.3: DetCon_B takes BYOL's settings; 1000 epochs: lr 0.2, wd 1.5e-6, τ0 0.996;
    # 300 epochs: DetCon_S's lr 0.3 and wd 1e-6, τ0 0.99.
    detcon = methods.DetConConfig(
        variant='b', projector=methods.HeadConfig(hidden_dim=4096, output_dim=256),
        predictor=methods.HeadConfig(hidden_dim=4096, output_dim=256),
        ema_tau_base=0.996 if epochs >= 1000 else 0.99)
    base_lr, weight_decay = (0.2, 1.5e-6) if epochs >= 1000 else (0.3, 1e-6)
  else:
    detcon = methods.DetConConfig(variant='s',
                                  projector=methods.HeadConfig(hidden_dim=2048, output_dim=128))
    base_lr, weight_decay = 0.3, 1e-6
  examples = (pretrain.COCO_TRAIN_EXAMPLES if dataset == 'coco' else
              pretrain.IMAGENET_TRAIN_EXAMPLES)
  steps = pretrain.steps_for_epochs(epochs, DETCON_BATCH, examples)
  # LARS at batch 4096 (DetCon A.3); linear warmup for epochs // 100 epochs, as DeepMind's
  # DetCon release computes it (10 at 1000 epochs, BYOL App. C's; 3 at 300); cosine on
  # ImageNet, COCO's piecewise constant on COCO.
  optimizer = optimization.lars(
      optimization.scaled_learning_rate(base_lr, DETCON_BATCH), steps,
      warmup_steps=pretrain.steps_for_epochs(epochs // 100, DETCON_BATCH, examples),
      weight_decay=weight_decay, schedule='piecewise_coco' if dataset == 'coco' else 'cosine')
  task = PretrainTask(method=methods.MethodConfig(type='detcon', detcon=detcon), train_data=data)
  return experiment(task, steps, optimizer)


def as_baseline(params: PretrainExperiment) -> PretrainExperiment:
  """The method DetCon builds on (§3.1): one global mask and one latent per view (DetCon
  Table 4, '#latents 1'). DetCon_B becomes BYOL with BYOL's regression loss, DetCon_S SimCLR."""
  params.task.train_data.masks = GLOBAL_MASK.replace()
  detcon = params.task.method.detcon
  detcon.num_samples = 1
  if detcon.variant == 'b':
    detcon.loss = 'regression'
  return params


def global_contrastive(params: PretrainExperiment) -> PretrainExperiment:
  """DetCon_B's contrastive loss on one global mask: BYOL's architecture, not its loss."""
  params.task.train_data.masks = GLOBAL_MASK.replace()
  return params


@exp_factory.register_config_factory('detcon_b_imagenet_1000ep')
def detcon_b_imagenet_1000ep() -> PretrainExperiment:
  return detcon_experiment('b', 1000)


@exp_factory.register_config_factory('detcon_b_imagenet_300ep')
def detcon_b_imagenet_300ep() -> PretrainExperiment:
  return detcon_experiment('b', 300)


@exp_factory.register_config_factory('detcon_b_imagenet')
def detcon_b_imagenet() -> PretrainExperiment:
  return detcon_b_imagenet_1000ep()


@exp_factory.register_config_factory('detcon_s_imagenet_1000ep')
def detcon_s_imagenet_1000ep() -> PretrainExperiment:
  return detcon_experiment('s', 1000)


@exp_factory.register_config_factory('detcon_s_imagenet_300ep')
def detcon_s_imagenet_300ep() -> PretrainExperiment:
  return detcon_experiment('s', 300)


@exp_factory.register_config_factory('detcon_s_imagenet')
def detcon_s_imagenet() -> PretrainExperiment:
  return detcon_s_imagenet_1000ep()


@exp_factory.register_config_factory('byol_imagenet_1000ep')
def byol_imagenet_1000ep() -> PretrainExperiment:
  return as_baseline(detcon_experiment('b', 1000))


@exp_factory.register_config_factory('byol_imagenet_300ep')
def byol_imagenet_300ep() -> PretrainExperiment:
  return as_baseline(detcon_experiment('b', 300))


@exp_factory.register_config_factory('byol_imagenet')
def byol_imagenet() -> PretrainExperiment:
  return byol_imagenet_1000ep()


@exp_factory.register_config_factory('simclr_imagenet_1000ep')
def simclr_imagenet_1000ep() -> PretrainExperiment:
  return as_baseline(detcon_experiment('s', 1000))


@exp_factory.register_config_factory('simclr_imagenet_300ep')
def simclr_imagenet_300ep() -> PretrainExperiment:
  return as_baseline(detcon_experiment('s', 300))


@exp_factory.register_config_factory('simclr_imagenet')
def simclr_imagenet() -> PretrainExperiment:
  return simclr_imagenet_1000ep()


@exp_factory.register_config_factory('detcon_b_global_imagenet_1000ep')
def detcon_b_global_imagenet_1000ep() -> PretrainExperiment:
  return global_contrastive(detcon_experiment('b', 1000))


@exp_factory.register_config_factory('detcon_b_global_imagenet_300ep')
def detcon_b_global_imagenet_300ep() -> PretrainExperiment:
  return global_contrastive(detcon_experiment('b', 300))


@exp_factory.register_config_factory('detcon_b_coco')
def detcon_b_coco() -> PretrainExperiment:
  return detcon_experiment('b', 1000, 'coco')


@exp_factory.register_config_factory('detcon_s_coco')
def detcon_s_coco() -> PretrainExperiment:
  return detcon_experiment('s', 1000, 'coco')


@exp_factory.register_config_factory('detcon_b_coco_grid')
def detcon_b_coco_grid() -> PretrainExperiment:
  """5×5 grid masks, the best grid of DetCon §4.3, Fig. 7."""
  return detcon_experiment('b', 1000, 'coco', data_config.MaskConfig(
      type='grid', grid=data_config.GridMasks(grid_size=5)))


# ------------------------------------------------------------------------------ DetCo family

def detco_experiment(local: bool, levels: Sequence[str], weights: Sequence[float],
                     learning_rate: float) -> PretrainExperiment:
  """DetCo (Xie et al. 2021, §3.2, §3.3, appendix §6.5), or MoCo v2 (Chen et al. 2020) with
  local=False, levels ('5',), weights (1.0,): ImageNet, 200 epochs, batch 256."""
  data = data_config.DataConfig(global_batch_size=DETCO_BATCH, masks=GLOBAL_MASK.replace(),
                                **data_config.mocov2_views())
  detco = methods.DetCoConfig(levels=list(levels), level_weights=list(weights), local=local)
  steps = pretrain.steps_for_epochs(200, DETCO_BATCH, pretrain.IMAGENET_TRAIN_EXAMPLES)
  # Cosine decay, SGD momentum 0.9 and weight decay 1e-4 (coupled L2): MoCo's, which DetCo
  # takes (§6.5).
  task = PretrainTask(method=methods.MethodConfig(type='detco', detco=detco), train_data=data,
                      losses=pretrain.PretrainLosses(l2_weight_decay=1e-4))
  # MoCo's query encoder has per-GPU BN (DDP without SyncBN): per-replica BN here, in
  # `bn_splits` groups per replica (docs/design.md §4).
  task.encoder.norm_activation.use_sync_bn = False
  optimizer = optimization.sgd(optimization.scaled_learning_rate(learning_rate, DETCO_BATCH),
                               steps, momentum=0.9)
  return experiment(task, steps, optimizer)


@exp_factory.register_config_factory('detco_imagenet_200ep')
def detco_imagenet_200ep() -> PretrainExperiment:
  return detco_experiment(True, ('2', '3', '4', '5'), (0.1, 0.4, 0.7, 1.0), DETCO_LEARNING_RATE)


@exp_factory.register_config_factory('mocov2_imagenet_200ep')
def mocov2_imagenet_200ep() -> PretrainExperiment:
  return detco_experiment(False, ('5',), (1.0,), MOCOV2_LEARNING_RATE)


# ------------------------------------------------------------------------------------ DeCon

def decon(params: PretrainExperiment, variant: str) -> PretrainExperiment:
  """DeCon-SL / DeCon-ML around an experiment's method, with its data, encoder and optimiser."""
  method = params.task.method
  base = methods.BaseMethodConfig(type=method.type, **{method.type: method.get()})
  params.task.method = methods.MethodConfig(
      type='decon', decon=methods.DeConConfig(base=base, variant=variant))
  return params


@exp_factory.register_config_factory('decon_sl_detcon_b_coco')
def decon_sl_detcon_b_coco() -> PretrainExperiment:
  return decon(detcon_b_coco(), 'sl')


@exp_factory.register_config_factory('decon_ml_detcon_b_coco')
def decon_ml_detcon_b_coco() -> PretrainExperiment:
  return decon(detcon_b_coco(), 'ml')


@exp_factory.register_config_factory('decon_sl_detcon_s_coco')
def decon_sl_detcon_s_coco() -> PretrainExperiment:
  return decon(detcon_s_coco(), 'sl')


@exp_factory.register_config_factory('decon_ml_detcon_s_coco')
def decon_ml_detcon_s_coco() -> PretrainExperiment:
  return decon(detcon_s_coco(), 'ml')


@exp_factory.register_config_factory('decon_sl_detcon_b_imagenet')
def decon_sl_detcon_b_imagenet() -> PretrainExperiment:
  return decon(detcon_b_imagenet(), 'sl')


@exp_factory.register_config_factory('decon_ml_detcon_b_imagenet')
def decon_ml_detcon_b_imagenet() -> PretrainExperiment:
  return decon(detcon_b_imagenet(), 'ml')


@exp_factory.register_config_factory('decon_sl_detcon_s_imagenet')
def decon_sl_detcon_s_imagenet() -> PretrainExperiment:
  return decon(detcon_s_imagenet(), 'sl')


@exp_factory.register_config_factory('decon_ml_detcon_s_imagenet')
def decon_ml_detcon_s_imagenet() -> PretrainExperiment:
  return decon(detcon_s_imagenet(), 'ml')


@exp_factory.register_config_factory('decon_sl_detco_imagenet_200ep')
def decon_sl_detco_imagenet_200ep() -> PretrainExperiment:
  return decon(detco_imagenet_200ep(), 'sl')


@exp_factory.register_config_factory('decon_ml_detco_imagenet_200ep')
def decon_ml_detco_imagenet_200ep() -> PretrainExperiment:
  return decon(detco_imagenet_200ep(), 'ml')


# ------------------------------------------------------------------------- CPU miniatures

TINY_IMAGE_SIZE = 64
TINY_BATCH = 4


def tiny(params: PretrainExperiment) -> PretrainExperiment:
  """The CPU miniature of an experiment: the same method, views and losses on a ResNet-10 at a
  quarter width (a few hundred thousand weights), 64 px views, batch 4, 20 steps, float32 under
  MirroredStrategy; the method shrinks its own heads and queues (`MethodBlock.tiny`)."""
  task = params.task
  old_batch, old_steps = task.train_data.global_batch_size, params.trainer.train_steps
  task.encoder.backbone = backbones.Backbone(
      type='resnet', resnet=backbones.ResNet(model_id=10, depth_multiplier=0.25))
  data = task.train_data
  data.override(dict(global_batch_size=TINY_BATCH, shuffle_buffer_size=32, cycle_length=2,
                     view1=dict(output_size=TINY_IMAGE_SIZE),
                     view2=dict(output_size=TINY_IMAGE_SIZE)))
  task.method.get().tiny(task)  # the method's own heads, queues and sizes
  # The same schedule over 20 steps (10% warmup where it had one), the learning rate scaled to
  # the batch by the linear rule.
  warmup = 2 if params.trainer.optimizer_config.warmup.type else 0
  task.log_every_steps = 5
  # One step per compiled call: on a CPU a loop of several saves nothing, and Keras traces the
  # train step twice for it (the loop's first step and its body).
  params.trainer.override(dict(train_steps=20, steps_per_loop=1, checkpoint_interval=10,
                               summary_interval=10))
  optimization.reschedule(params.trainer.optimizer_config, old_steps, 20, warmup,
                          lr_scale=TINY_BATCH / old_batch)
  params.runtime.override(dict(distribution_strategy='mirrored', mixed_precision_dtype='float32'))
  return params


@exp_factory.register_config_factory('detcon_b_tiny')
def detcon_b_tiny() -> PretrainExperiment:
  return tiny(detcon_b_imagenet_1000ep())


@exp_factory.register_config_factory('detcon_s_tiny')
def detcon_s_tiny() -> PretrainExperiment:
  return tiny(detcon_s_imagenet_1000ep())


@exp_factory.register_config_factory('byol_tiny')
def byol_tiny() -> PretrainExperiment:
  return tiny(byol_imagenet_1000ep())


@exp_factory.register_config_factory('simclr_tiny')
def simclr_tiny() -> PretrainExperiment:
  return tiny(simclr_imagenet_1000ep())


@exp_factory.register_config_factory('detcon_b_global_tiny')
def detcon_b_global_tiny() -> PretrainExperiment:
  return tiny(detcon_b_global_imagenet_1000ep())


@exp_factory.register_config_factory('detco_tiny')
def detco_tiny() -> PretrainExperiment:
  return tiny(detco_imagenet_200ep())


@exp_factory.register_config_factory('mocov2_tiny')
def mocov2_tiny() -> PretrainExperiment:
  return tiny(mocov2_imagenet_200ep())


@exp_factory.register_config_factory('decon_sl_detcon_b_tiny')
def decon_sl_detcon_b_tiny() -> PretrainExperiment:
  return tiny(decon_sl_detcon_b_imagenet())


@exp_factory.register_config_factory('decon_ml_detcon_b_tiny')
def decon_ml_detcon_b_tiny() -> PretrainExperiment:
  return tiny(decon_ml_detcon_b_imagenet())


@exp_factory.register_config_factory('decon_sl_detcon_s_tiny')
def decon_sl_detcon_s_tiny() -> PretrainExperiment:
  return tiny(decon_sl_detcon_s_imagenet())


@exp_factory.register_config_factory('decon_ml_detcon_s_tiny')
def decon_ml_detcon_s_tiny() -> PretrainExperiment:
  return tiny(decon_ml_detcon_s_imagenet())


@exp_factory.register_config_factory('decon_sl_detco_tiny')
def decon_sl_detco_tiny() -> PretrainExperiment:
  return tiny(decon_sl_detco_imagenet_200ep())


@exp_factory.register_config_factory('decon_ml_detco_tiny')
def decon_ml_detco_tiny() -> PretrainExperiment:
  return tiny(decon_ml_detco_imagenet_200ep())
