import sys

from napari_lesionmix.cli import main

sys.exit(main())
