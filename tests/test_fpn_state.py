"""DeCon's released decoder (tf_detcon/weights/fpn_state.py): a detectron2-layout FPN beside its
ResNet, in the two layouts DeCon's authors save and convert, imported into our export's Model
Garden FPN. The reference is the network in PyTorch: torchvision's ResNet with an FPN that runs
as detectron2's does (laterals, nearest 2× top-down sum, the finest output convolution), in a
process of its own."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from tests.test_weights import RESNET_LEVELS
from tests.test_weights import images, imported_features, normalized, relative_error
from tf_detcon.exports import manifest
from tf_detcon.weights import importer

TORCH_SCRIPT = r'''
import argparse, pickle, sys
import numpy as np
import torch, torchvision
''' + RESNET_LEVELS + r'''
nn = torch.nn
arch, norm, layout, images_path, file_path, features_path = sys.argv[1:7]
norm = norm == 'norm'
torch.manual_seed(0)


class D2Conv(nn.Conv2d):
  """detectron2's Conv2d: a convolution with a bias, or without one and then `.norm`."""

  def __init__(self, cin, cout, kernel):
    super().__init__(cin, cout, kernel, padding=kernel // 2, bias=not norm)
    if norm:
      self.norm = nn.BatchNorm2d(cout)

  def forward(self, x):
    x = super().forward(x)
    return self.norm(x) if norm else x


def randomized(module):
  with torch.no_grad():
    for m in module.modules():
      if isinstance(m, nn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.0); m.bias.normal_(0.0, 0.1)
        m.running_mean.normal_(0.0, 0.1); m.running_var.uniform_(0.5, 1.5)
      elif isinstance(m, nn.Conv2d) and m.bias is not None:
        m.bias.normal_(0.0, 0.1)
  return module.eval()


encoder = randomized(getattr(torchvision.models, arch)(weights=None))
widths = [64, 128, 256, 512] if arch == 'resnet18' else [256, 512, 1024, 2048]
decoder = nn.Module()
for level, width in zip((2, 3, 4, 5), widths):
  decoder.add_module(f'fpn_lateral{level}', D2Conv(width, 32, 1))
decoder.add_module('fpn_output2', D2Conv(32, 32, 3))  # DeCon keeps only the finest output
randomized(decoder)


def forward(x):
  out = resnet_levels(encoder, x)
  with torch.no_grad():
    prev = decoder.fpn_lateral5(out['5'])
    for level in '432':
      prev = getattr(decoder, f'fpn_lateral{level}')(out[level]) + nn.functional.interpolate(
          prev, scale_factor=2.0, mode='nearest')
    out['p2'] = decoder.fpn_output2(prev)
  return {k: v.permute(0, 2, 3, 1).numpy() for k, v in out.items()}


x = torch.from_numpy(np.load(images_path)).permute(0, 3, 1, 2)
features = forward(x)
teacher = {**{f'encoder_k.{k}': v for k, v in encoder.state_dict().items()},
           **{f'decoder_k.{k}': v for k, v in decoder.state_dict().items()}}
if layout == 'slotcon':  # DeCon's training file on SlotCon: student, teacher, slots, args
  student = {k.replace('_k.', '_q.'): v + 1.0 if v.is_floating_point() else v
             for k, v in teacher.items()}
  model = {f'module.{k}': v for k, v in {**student, **teacher}.items()}
  model['module.grouping_k.slot_embed.weight'] = torch.zeros(8, 4)
  torch.save({'model': model, 'args': argparse.Namespace(arch=arch, teacher_momentum=0.99),
              'epoch': 800}, file_path)
else:  # the authors' conversion to detectron2 (--use-decoder): a pickle of numpy arrays
  names = {}
  for k, v in teacher.items():
    k = k.split('.', 1)[1]
    if k.startswith('fpn_') or k.startswith('fc'):
      names[k] = v
      continue
    if 'layer' not in k:
      k = 'stem.' + k
    for t in (1, 2, 3, 4):
      k = k.replace(f'layer{t}', f'res{t + 1}')
    for t in (1, 2, 3):
      k = k.replace(f'bn{t}', f'conv{t}.norm')
    names[k.replace('downsample.0', 'shortcut').replace('downsample.1', 'shortcut.norm')] = v
  with open(file_path, 'wb') as f:
    pickle.dump({'model': {k: v.numpy() for k, v in names.items() if not k.startswith('fc')},
                 'matching_heuristics': True}, f)
np.savez(features_path, **features)
'''


@pytest.mark.parametrize('arch, norm, layout', [
    ('resnet50', 'norm', 'slotcon'),  # DeCon's own: BN in the FPN, the training file
    ('resnet18', 'bias', 'detectron2'),  # a converted file, an FPN with biases
])
def test_decons_decoder_imports_and_computes_the_source_networks_features(arch, norm, layout,
                                                                          tmp_path):
  np.save(tmp_path / 'images.npy', normalized(images()))
  path = tmp_path / ('decon.pth' if layout == 'slotcon' else 'decon.pkl')
  result = subprocess.run([sys.executable, '-c', TORCH_SCRIPT, arch, norm, layout,
                           str(tmp_path / 'images.npy'), str(path), str(tmp_path / 'f.npz')],
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  own = dict(np.load(tmp_path / 'f.npz'))
  fmt = 'torchvision' if layout == 'slotcon' else 'detectron2'
  out = importer.run(fmt, str(path), str(tmp_path / 'export'), padding='symmetric',
                     allow_pickle=fmt == 'detectron2')
  record = manifest.read(out)
  assert record.has_decoder and record.decoder['min_level'] == 2
  assert record.decoder['trained_layers'] == ['lateral_2', 'lateral_3', 'lateral_4',
                                              'lateral_5', 'norm_2', 'post_hoc_2']
  if layout == 'slotcon':  # the teacher, as DeCon's and SlotCon's conversions take it
    assert record.source['scope'] == 'model.module.encoder_k.'
    assert not [n for n in record.source['not_imported'] if 'decoder_k' in n]
    student = importer.run(fmt, str(path), str(tmp_path / 'student'), padding='symmetric',
                           scope='encoder_q')  # --source_scope still chooses
    assert manifest.read(student).source['scope'] == 'model.module.encoder_q.'
    assert manifest.read(student).has_decoder
  ours = imported_features(out, images())
  errors = {level: relative_error(ours[level], own[level]) for level in own}
  print(f'{arch} {norm} {layout}: DeCon file -> import, encoder and FPN P2:', errors)
  assert max(errors.values()) < 1e-4, errors



@pytest.mark.parametrize('keys, encoder, decoder', [
    (['module.encoder_k.conv1.weight', 'module.decoder_k.fpn_lateral2.weight',
      'module.decoder_q.fpn_lateral2.weight'], 'module.encoder_k.', 'module.decoder_k.'),
    (['backbone.conv1.weight', 'decoder.fpn_lateral2.norm.weight'], 'backbone.', 'decoder.'),
    (['stem.conv1.weight', 'fpn_lateral5.weight', 'box_head.fc1.weight'], '', ''),
    (['encoder_q.conv1.weight', 'decoder_q.head.weight'], 'encoder_q.', None),
    (['module.encoder.conv1.weight', 'module.neck.lateral_convs.0.conv.weight'],
     'module.encoder.', None),  # SoCo's mmdetection-layout neck is not detectron2's
])
def test_the_decoder_is_found_beside_its_encoder(keys, encoder, decoder):
  from tf_detcon.weights import fpn_state  # pylint: disable=g-import-not-at-top
  assert fpn_state.decoder_scope(keys, encoder) == decoder
