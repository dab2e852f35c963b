from django.urls import path

from restyle_site.views import AIImageSearchView

urlpatterns = [path("api/ai-image-search/", AIImageSearchView.as_view(), name="ai-image-search")]
