"""Copy-paste machinery shared by the crop-local methods (Soft-CP, LesionMix, TumorCP).

A copy-paste method takes lesions (connected components) out of a donor,
transforms each crop, and pastes it into a host where the anatomy allows. The
pieces are public so the next such method is one module:

* :mod:`~napari_lesionmix.augment.paste.objects`: the donor's lesions
  (:class:`~napari_lesionmix.augment.paste.objects.DonorLesions`, found once per
  donor) and one transformed, soft-masked crop ready to paste
  (:class:`~napari_lesionmix.augment.paste.objects.PasteObject`,
  :func:`~napari_lesionmix.augment.paste.objects.prepare_object`);
* :mod:`~napari_lesionmix.augment.paste.placement`: the reference region of
  Soft-CP's Eq. (3) (brain, organ label, estimated brain, CSF-free tissue), the
  fractions of Eqs. (3)-(4) and the placement search;
* :mod:`~napari_lesionmix.augment.paste.image_ops`: image-level transforms of
  the host (crop-and-resize, gamma, noise);
* :mod:`~napari_lesionmix.augment.softmask`: the soft mask S and the blend
  ``I = S * I_paste + (1 - S) * I_host`` (Soft-CP Eq. 1).
"""
