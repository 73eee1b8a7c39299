"""tf_detcon: DetCon, DetCo and DeCon dense self-supervised pretraining for TF2 / Model Garden."""

import setuptools

# The pinned stack (Python 3.11). Model Garden 2.20 requires tensorflow~=2.20.0; numpy 2.4 breaks its
# fake-data helpers; all models are tf_keras (Keras 2) models. No tensorflow-addons: it is
# end-of-life and fails to import on TF 2.20.
INSTALL_REQUIRES = [
    'tensorflow==2.20.0',
    'tf-keras==2.20.1',
    'tf-models-official==2.20.0',
    'numpy==2.3.5',
    'scikit-image==0.26.0',
    'tensorflow-datasets==4.9.10',
    'pycocotools==2.0.11',
    'absl-py',
    'pillow',
    'importlib_resources',  # TFDS builders need it and do not declare it
]

BEAM = 'apache-beam==2.77.0'
# torchvision 0.29.1 imports only beside torch 2.14.1 (an older torch fails on its operators).
# torch asks for setuptools >= 77.0.3; setuptools 81 dropped pkg_resources, which tensorflow_hub
# (Model Garden's, and hub.KerasLayer on our exports) imports.
IMPORT = ['torch==2.14.1', 'torchvision==0.29.1', 'jax==0.10.2', 'dm-haiku==0.0.17',
          'setuptools>=77.0.3,<81']
# launch/export_keras.py: KerasHub presets for Keras 3 (keras 3.15 and tensorflow-text are
# already here through TF 2.20 and Model Garden). keras-hub pins kagglesdk 0.1.28, so pip picks
# kaggle 2.2.1 (Model Garden's) when both are resolved in one install.
KERAS = ['keras-hub==0.32.0']

# The absl front ends in launch/, each a command `tf-detcon-<name>` (underscores as dashes).
LAUNCHERS = ('pretrain', 'finetune', 'evaluate', 'visualize', 'make_masks', 'import_weights',
             'export_keras')

setuptools.setup(
    name='tf_detcon',
    version='0.1.0',
    description='Dense self-supervised pretraining (DetCon, DetCo, DeCon) for TF2 and Model Garden',
    # launch/ installs as the package tf_detcon_launch, so that its absl front ends are also
    # commands (`tf-detcon-pretrain --experiment=...`) and `python launch/<name>.py` finds
    # tf_detcon from the install, without touching sys.path.
    packages=setuptools.find_packages(include=['tf_detcon', 'tf_detcon.*']) + ['tf_detcon_launch'],
    package_dir={'tf_detcon_launch': 'launch'},
    entry_points={'console_scripts': [
        f'tf-detcon-{name.replace("_", "-")} = tf_detcon_launch.{name}:run'
        for name in LAUNCHERS]},
    python_requires='>=3.10,<3.13',
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # Mask precompute on a Beam runner (launch/make_masks.py --runner=beam). It installs
        # beside the pins above; it takes protobuf < 7, pillow < 13 and pyarrow < 26.
        'beam': [BEAM],
        # launch/import_weights.py's source frameworks, to read a released file and to check an
        # import against the network it came from. The package imports without them.
        'import': IMPORT,
        # launch/export_keras.py; the JAX backend also needs jax (in 'import').
        'keras': KERAS,
        # pytest-xdist: scripts/test.sh runs the suite on both of CI's cores.
        # hypothesis: the launchers' property-based fuzz (tests/test_fuzz.py), 0.5 MB.
        'test': ['pytest', 'pytest-xdist==3.8.0', 'scipy', 'hypothesis==6.170.27', BEAM,
                 *IMPORT, *KERAS],
    },
)
