"""The application layer: the ``vitrine`` command line and the demo.

It sits on top of everything else: it imports the services (``streams``, ``recall``,
``encoders``) and the foundation (``vitrine``), and nothing imports it.
"""
