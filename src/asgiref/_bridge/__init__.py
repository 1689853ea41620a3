"""How ``asgiref.sync`` crosses between sync and async code: one mechanism per
module, none of it API.

Imports flow one way: ``asgiref.sync`` imports these modules, they import
each other (without cycles), ``asgiref.local``,
``asgiref.current_thread_executor`` and ``asgiref._compat``, and nothing here
imports ``asgiref.sync``. The state ``SyncToAsync`` and ``AsyncToSync`` expose
as class attributes and the mechanisms also use is defined here, and the
classes hold the very same objects. The README's "Code map" lists the modules.
"""
