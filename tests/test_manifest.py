"""The export's manifest: written whole by an export, read back as the same record, exports
written before `network` was recorded read with their function derived, and a torn or foreign
file named in one line."""

import json
import os

import pytest

from tf_detcon.exports import manifest


def test_a_pretraining_export_records_its_function_and_reads_back(tiny_run):
  export = os.path.join(tiny_run.model_dir, 'export')
  record = manifest.read(export)
  with open(manifest.path_in(export)) as f:
    written = json.load(f)
  assert record.as_dict() == written
  assert record.method == 'detcon' and record.step == tiny_run.step
  assert record.init_checkpoint_modules == ['backbone'] and not record.has_decoder
  norm = tiny_run.params.task.encoder.norm_activation
  backbone = tiny_run.params.task.encoder.backbone.resnet
  assert record.network == {
      'backbone': {'type': 'resnet', 'model_id': backbone.model_id,
                   'depth_multiplier': backbone.depth_multiplier,
                   'stem_type': backbone.stem_type, 'resnetd_shortcut': backbone.resnetd_shortcut,
                   'replace_stem_max_pool': backbone.replace_stem_max_pool,
                   'se_ratio': backbone.se_ratio, 'scale_stem': backbone.scale_stem},
      'norm_activation': {'activation': norm.activation, 'norm_epsilon': norm.norm_epsilon}}
  assert written['tf_detcon_version'] == record.extra['tf_detcon_version']


def test_an_older_export_without_its_function_record_derives_it(tiny_run, tmp_path):
  with open(manifest.path_in(os.path.join(tiny_run.model_dir, 'export'))) as f:
    written = json.load(f)
  recorded = written.pop('network')
  (tmp_path / manifest.FILE).write_text(json.dumps(written))
  older = manifest.read(str(tmp_path))
  assert older.network == {} and older.function == recorded
  assert 'network' not in older.as_dict()


def test_a_decon_record_derives_its_fpn_fields():
  encoder = {'backbone': {'type': 'resnet', 'resnet': {'model_id': 50}},
             'norm_activation': {'activation': 'relu', 'norm_epsilon': 1e-5}}
  decoder = {'decoder': {'type': 'fpn', 'fpn': {'num_filters': 256, 'fusion_type': 'sum',
                                                'use_separable_conv': False,
                                                'use_keras_layer': False}},
             'min_level': 2, 'max_level': 5}
  fields = manifest.network_fields(encoder, decoder)
  assert fields['decoder'] == {'type': 'fpn', 'num_filters': 256, 'fusion_type': 'sum',
                               'use_separable_conv': False}
  assert fields['backbone'] == {'type': 'resnet', 'model_id': 50}


@pytest.mark.parametrize('text', ['', '{"method": "detcon"', '[1, 2]', '{"method": "x"}',
                                  '\udcff'.encode('utf-8', 'surrogatepass').decode('latin-1')])
def test_a_torn_or_foreign_file_is_one_line_naming_it(tmp_path, text):
  (tmp_path / manifest.FILE).write_text(text, encoding='latin-1')
  with pytest.raises(ValueError) as failure:
    manifest.read(str(tmp_path))
  message = str(failure.value)
  assert message.startswith(f'{tmp_path / manifest.FILE} is not an export manifest (')
  assert message.endswith('): export or import again') and '\n' not in message


def test_no_file_is_no_manifest(tmp_path):
  assert manifest.read(str(tmp_path)) is None and not manifest.exists(str(tmp_path))
