"""edgesparse: Keras model -> small, fast, verified sparse TFLite model for edge CPUs."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
DOCS = ["mkdocs>=1.6,<2", "mkdocs-material>=9.5,<10", "mkdocstrings[python]>=0.26,<2"]

setup(
    name="edgesparse",
    version="0.1.0",
    description="Prune, quantize, export, verify and profile Keras models as sparse TFLite models.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8") if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["edgesparse", "edgesparse.*"]),
    include_package_data=True,
    package_data={"edgesparse": ["py.typed"]},
    # Tested here: tensorflow 2.21, tf-keras 2.21, tfmot 0.8.1, ai-edge-litert 2.3.
    install_requires=[
        "tensorflow>=2.16,<2.22",
        "tf-keras>=2.16,<2.22",
        "tensorflow-model-optimization>=0.8.1,<0.9",
        "ai-edge-litert>=2.1.5,<2.4",
        "flatbuffers>=23.5",  # writing .tflite rewrites (edgesparse/tflite/rewrite.py)
        "numpy>=1.26,<3",
        "click>=8.1,<9",
        "pyyaml>=6,<7",
        "pydantic>=2.6,<3",
        "rich>=13,<16",
        "scikit-learn>=1.3,<2",
        "matplotlib>=3.8,<4",
        "tensorboard>=2.16,<3",
        "pillow>=10,<14",  # image_folder data source
        "h5py>=3.10,<4",  # reading .h5 model files (Keras 2 and 3)
        "keras>=3.5,<4",  # Keras 3 models users bring (translated to tf_keras); TensorFlow installs it too
        "pycocotools>=2.0.7,<3",  # detection mAP@0.5 (COCOeval), edgesparse/boxes.py
    ],
    extras_require={
        # ruff and mypy run in CI before the tests (see .ci/run and README).
        "test": ["pytest>=8,<10", "pytest-timeout>=2.2,<3", "pytest-xdist>=3.5,<4", "ray[default]>=2.9,<3", "ruff>=0.15,<0.18",
                 "mypy>=1.15,<3", "types-PyYAML>=6,<7", *DOCS],
        # The documentation site (mkdocs.yml); its strict build is a test, so the test extra has it too.
        "docs": DOCS,
        "ray": ["ray[default]>=2.9,<3"],
        # Live progress bars in a Jupyter cell (edgesparse.progress.NotebookDisplay); a notebook has it already.
        "notebook": ["ipython>=8"],
        # The device runner's fallback runtime on a Raspberry Pi OS Python (needs numpy<2 there); not for the host.
        "device": ["tflite-runtime>=2.14", "numpy<2"],
    },
    entry_points={"console_scripts": ["edgesparse=edgesparse.cli:main"]},
)
