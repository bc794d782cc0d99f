package holdfastotel_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/holdfast-go/holdfast/degrade"
	holdfastotel "github.com/holdfast-go/holdfast/otel"
)

// Instrument a degrade.Config before New; wrap the handler outermost.
func ExampleInstrumentation_Instrument() {
	reader := sdkmetric.NewManualReader()
	inst, err := holdfastotel.New(holdfastotel.Config{
		MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)),
	})
	if err != nil {
		panic(err)
	}
	cfg := degrade.Config{}
	if err := inst.Instrument(&cfg); err != nil {
		panic(err)
	}
	ctrl := degrade.New(cfg)
	defer ctrl.Close()
	ctrl.Force(degrade.ReadOnly, "maintenance")
	handler := inst.Handler(ctrl.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))

	w := httptest.NewRecorder()
	handler.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/orders", nil))
	fmt.Println(w.Code)

	var rm metricdata.ResourceMetrics
	_ = reader.Collect(context.Background(), &rm)
	for _, m := range rm.ScopeMetrics[0].Metrics {
		if m.Name == "holdfast.degrade.gate.decisions" {
			dp := m.Data.(metricdata.Sum[int64]).DataPoints[0]
			d, _ := dp.Attributes.Value(holdfastotel.KeyDecision)
			fmt.Println(m.Name, d.AsString(), dp.Value)
		}
	}
	// Output:
	// 503
	// holdfast.degrade.gate.decisions refuse 1
}
