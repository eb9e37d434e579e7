"""The studio's dock widgets (Qt lives here and in the manifest hooks only).

Structure
---------
Every dock widget is a ``QWidget`` subclass in its own module, constructed by
napari from the manifest as ``Widget(napari_viewer)`` (a ``PublicOnlyProxy``
of the viewer), and thin over the core:

``state.py``
    :class:`~napari_lesionmix.widgets.state.StudioSession`, one per viewer,
    shared by all widgets: ``session = get_session(napari_viewer)``. It holds

    - ``host``, ``donor`` (:class:`~napari_lesionmix.io.nifti.Case`, file voxel
      order), ``host_record``/``donor_record`` (dataset records or ``None``),
      ``host_brain_mask``/``donor_brain_mask`` (bool, file order, or ``None``), ``dataset``;
    - ``orientation`` (:class:`~napari_lesionmix.io.display.DisplayOrientation` of
      the host: ``to_display(arr)`` gives the layer/preview order ``(S, P, L)``
      as a view, ``to_original`` goes back);
    - ``synthetic`` (:class:`~napari_lesionmix.augment.params.Synthetic`, with
      its ``params``), set with ``session.set_synthetic(syn)``, which updates the
      ``synthetic``, ``synthetic label`` and ``mixing mask`` layers in place,
      the preview and the Provenance widget;
    - ``preview``: the plane source the triplanar preview draws
      (``session.set_preview(source)``; any object with ``display_shape`` and
      ``planes((z, y, x)) -> {"axial"|"coronal"|"sagittal": Plane}``;
      :class:`~napari_lesionmix.io.display.VolumePlanes` slices full volumes);
    - ``cursor`` (display voxel ``(z, y, x)``), ``window`` (host intensity window);
    - ``cached(key, make)``: the one locked, bounded cache (the registry's
      ``Sources.cached``) where every method's prepared work lives;
    - ``intensity_match`` (``set_intensity_match(mode)``): the shared intensity
      step every method dock samples with; ``inputs()`` and
      ``fit_intensity(method, params)`` run it as the registry does;
    - ``replayers``: method name -> ``callable(params)`` that recomputes a
      sample from params (the Provenance widget's "Replay" calls it; raise
      ``LesionMixError`` for params that do not fit the loaded pair);
    - ``run(func, *args, on_done=..., desc=...)``: a napari ``thread_worker``
      with a ``napari.utils.progress`` bar; a ``LesionMixError`` becomes an
      error notification with its sentence, and no layer is dropped.

    Signals (psygnal): ``cases_changed``, ``dataset_changed``,
    ``synthetic_changed``, ``preview_changed``, ``cursor_changed(tuple)``,
    ``intensity_changed(str)``.
    Layers the session manages are tagged ``metadata["lesionmix_role"]`` (see
    ``state.ROLES``) and carry the host geometry in ``metadata["lesionmix"]``,
    so the writer saves them with the host's header; ``session.show_layer(role,
    display_array, **kwargs)`` adds or updates one.

``method.py``
    :class:`~napari_lesionmix.widgets.method.MethodDock`: a method's dock
    generated from its ``Options`` (seed/index, Sample, status, history,
    replay), drawing through the registry. Mixup and CutMix use it as is
    (manifest ``python_name: napari_lesionmix.widgets.method:mixup_dock``); Soft-CP
    and LesionMix subclass it for their extras.

``load.py`` (Load), ``carvemix.py`` (CarveMix, its live lambda slider), ``preview.py`` (Preview),
``provenance.py`` (Provenance).

Adding a method's dock
----------------------
A registered method needs one manifest command
(``python_name: napari_lesionmix.widgets.method:NAME_dock``) and a ``widgets``
entry: its dock is generated. Extras: subclass ``MethodDock``.

Adding another widget (Harmonize, Export)
-----------------------------------------
1. Write ``widgets/<name>.py`` with ``class XWidget(QWidget)`` taking
   ``napari_viewer``; get the session, connect to ``cases_changed`` to reset
   with ``state.bind(self, session.cases_changed, self.reset)`` (disconnects
   when the widget is destroyed),
   compute in ``session.run(...)`` and finish with
   ``session.set_synthetic(Synthetic(...))``; for a cheap live path while a
   slider moves, call ``session.set_preview(source)``.
2. Register ``session.replayers["<method>"] = self.replay`` so provenance replay works.
3. Add a command (``python_name: napari_lesionmix.widgets.<name>:XWidget``) and a
   ``widgets`` entry to ``napari_lesionmix/napari.yaml``; the studio
   (:func:`napari_lesionmix.widgets.studio.open_studio`) docks every widget the
   manifest lists, in manifest order.
4. Catch ``LesionMixError`` in slots and call ``state.notify_error(str(exc))``.
"""

#: Manifest display names of the dock widgets the studio opens, in order; the
#: preview is docked on its own, the others tabified.
PREVIEW_WIDGET = "Preview"
