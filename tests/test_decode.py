"""Tests for tf_detcon.data.decode: image shapes from headers and window decoding."""

import io

import numpy as np
from PIL import Image
from PIL import ImageFilter
import pytest
import tensorflow as tf

from tests.conftest import blocky_ids, palette
from tf_detcon.data import decode


def _encoded(fmt: str, height: int = 75, width: int = 101, **save) -> bytes:
  image = Image.fromarray(palette(9)[blocky_ids(height, width, 9, 7)]).filter(ImageFilter.BLUR)
  out = io.BytesIO()
  image.save(out, format=fmt, **save)
  return out.getvalue()


@pytest.mark.parametrize('fmt,save', [('JPEG', {'quality': 90}), ('JPEG', {'subsampling': 0}),
                                      ('PNG', {}), ('BMP', {}), ('GIF', {})])
def test_image_shape_from_the_header_matches_the_decoded_image(fmt, save):
  data = tf.constant(_encoded(fmt, **save))
  shape = decode.encoded_image_shape(data).numpy()
  np.testing.assert_array_equal(shape, [75, 101])
  decoded = tf.io.decode_image(data, channels=3, expand_animations=False)
  np.testing.assert_array_equal(shape, tf.shape(decoded)[:2].numpy())


@pytest.mark.parametrize('fmt', ['JPEG', 'PNG'])
def test_a_window_decodes_to_the_pixels_of_the_whole_image_cropped(fmt):
  data = tf.constant(_encoded(fmt))
  whole = tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
  for window in ([0, 0, 75, 101], [13, 29, 40, 33], [74, 100, 1, 1], [8, 0, 17, 101]):
    part = decode.decode_window(data, tf.constant(window, tf.int32),
                                  tf.constant([75, 101])).numpy()
    y, x, h, w = window
    np.testing.assert_array_equal(part, whole[y:y + h, x:x + w], err_msg=f'{fmt} {window}')
