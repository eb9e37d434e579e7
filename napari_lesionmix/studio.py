"""``python -m napari_lesionmix.studio``: open napari with the LesionMix studio docked.

What ``make studio`` runs. The studio itself lives in
:mod:`napari_lesionmix.widgets.studio`, since only ``widgets/`` may import napari.
"""

from napari_lesionmix.widgets.studio import main

if __name__ == "__main__":
    main()
